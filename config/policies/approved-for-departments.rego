package aigate.approved_for

allow if {
    input.resource.approval_status == "approved"
    count(input.resource.approved_for) == 0
}

allow if {
    input.resource.approval_status == "approved"
    input.user.department in input.resource.approved_for
}
