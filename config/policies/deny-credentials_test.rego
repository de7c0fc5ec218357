package aigate.credentials_test

import data.aigate.credentials

test_secret_denied if {
    credentials.deny with input as {"resource": {"type": "ai_service"}, "content": {"data_classification": ["credentials"], "entities": [{"type": "AWS_ACCESS_KEY"}]}}
}

test_pii_alone_not_denied_here if {
    not credentials.deny with input as {"resource": {"type": "ai_service"}, "content": {"data_classification": ["PII"], "entities": []}}
}
