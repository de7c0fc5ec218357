package eu_ai_act.prohibited

import future.keywords.if

default allow = false

# Deny social scoring AI systems
deny if {
    input.resource.capabilities[_] == "social_scoring"
}

# Deny real-time biometric identification in public spaces
deny if {
    input.resource.capabilities[_] == "biometric_identification"
    input.context.location_type == "public_space"
}

# Deny subliminal manipulation
deny if {
    input.resource.capabilities[_] == "subliminal_manipulation"
}
