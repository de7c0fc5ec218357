package aigate.prohibited_services

deny if input.resource.approval_status == "prohibited"

reason := sprintf("%s is prohibited by your organization's AI usage policy.", [input.resource.name])
