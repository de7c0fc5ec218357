package aigate.crown_jewel_test

import data.aigate.crown_jewel

test_upload_from_crown_jewel_denied if {
    crown_jewel.deny with input as {"request": {"action": "upload_file"}, "device": {"crown_jewel": true}}
}

test_prompt_from_crown_jewel_allowed if {
    not crown_jewel.deny with input as {"request": {"action": "send_prompt"}, "device": {"crown_jewel": true}}
}
