package aigate.contractors

deny if {
    input.user.employee_type == "contractor"
    input.resource.type == "ai_service"
    input.resource.approval_status != "approved"
}

reason := sprintf("Contractors may only use approved AI services; %s is not approved.", [input.resource.name])
