package aigate.contractors_test

import data.aigate.contractors

test_contractor_on_unapproved_denied if {
    contractors.deny with input as {"user": {"employee_type": "contractor"}, "resource": {"type": "ai_service", "approval_status": "review_required", "name": "X"}}
}

test_employee_not_affected if {
    not contractors.deny with input as {"user": {"employee_type": "full_time"}, "resource": {"type": "ai_service", "approval_status": "review_required", "name": "X"}}
}
