package aigate.approved_for_test

import data.aigate.approved_for

test_listed_department_allowed if {
    approved_for.allow with input as {"user": {"department": "engineering"}, "resource": {"approval_status": "approved", "approved_for": ["engineering"]}}
}

test_other_department_not_allowed if {
    not approved_for.allow with input as {"user": {"department": "sales"}, "resource": {"approval_status": "approved", "approved_for": ["engineering"]}}
}
