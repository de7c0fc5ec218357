package aigate.pii_untrusted_test

import data.aigate.pii_untrusted

test_pii_to_training_service_denied if {
    pii_untrusted.deny with input as {"resource": {"type": "ai_service", "name": "X", "data_handling": "trains_on_data", "certifications": ["SOC2"]}, "content": {"data_classification": ["PII"]}}
}

test_pii_to_certified_non_training_service_allowed if {
    not pii_untrusted.deny with input as {"resource": {"type": "ai_service", "name": "X", "data_handling": "no_retention", "certifications": ["SOC2"]}, "content": {"data_classification": ["PII"]}}
}
