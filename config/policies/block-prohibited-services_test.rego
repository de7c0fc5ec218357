package aigate.prohibited_services_test

import data.aigate.prohibited_services

test_prohibited_denied if {
    prohibited_services.deny with input as {"resource": {"approval_status": "prohibited", "name": "X"}}
}

test_approved_not_denied if {
    not prohibited_services.deny with input as {"resource": {"approval_status": "approved", "name": "X"}}
}
