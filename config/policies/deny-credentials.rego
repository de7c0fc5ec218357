package aigate.credentials

deny if {
    input.resource.type == "ai_service"
    "credentials" in input.content.data_classification
}

reason := msg if {
    types := {e.type | some e in input.content.entities; e.type in data.metadata.secret_types}
    msg := sprintf("Credentials must never be sent to an AI service (found: %s).", [concat(", ", sort(types))])
}
