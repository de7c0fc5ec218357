package aigate.review_unapproved_test

import data.aigate.review_unapproved

test_unknown_reviewed if {
    review_unapproved.review with input as {"resource": {"approval_status": "unknown", "name": "X"}}
}

test_approved_not_reviewed if {
    not review_unapproved.review with input as {"resource": {"approval_status": "approved", "name": "X"}}
}
