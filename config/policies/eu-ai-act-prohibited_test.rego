package eu_ai_act.prohibited_test

import future.keywords.if
import data.eu_ai_act.prohibited

test_social_scoring_denied if {
    prohibited.deny with input as {"resource": {"capabilities": ["social_scoring"]}, "context": {}}
}

test_biometrics_only_in_public_spaces if {
    prohibited.deny with input as {"resource": {"capabilities": ["biometric_identification"]}, "context": {"location_type": "public_space"}}
    not prohibited.deny with input as {"resource": {"capabilities": ["biometric_identification"]}, "context": {"location_type": "corporate"}}
}

test_text_generation_not_denied if {
    not prohibited.deny with input as {"resource": {"capabilities": ["text_generation"]}, "context": {}}
}
