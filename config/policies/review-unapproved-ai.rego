package aigate.review_unapproved

review if input.resource.approval_status in {"review_required", "unknown"}

reason := sprintf("%s has not been approved for use yet. Explain the business need to continue.", [input.resource.name])
