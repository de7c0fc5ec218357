package aigate.pii_untrusted

sensitive := {"PII", "PHI", "financial"}

carries_personal_data if {
    some class in input.content.data_classification
    class in sensitive
}

untrusted if input.resource.data_handling == "trains_on_data"

untrusted if count(input.resource.certifications) == 0

deny if {
    input.resource.type == "ai_service"
    carries_personal_data
    untrusted
}

reason := sprintf("Personal or financial data may not be sent to %s: it trains on customer data or holds no certification.", [input.resource.name])
