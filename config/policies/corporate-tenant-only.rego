package aigate.tenant_restriction

# Adds each vendor's tenant-restriction header with the organisation's own tenant, so only
# the corporate workspace works and personal accounts are refused by the vendor itself.
# Fill rule_metadata.tenants with your workspace ids, then set the policy's status to active.
inject_headers := {name: value |
    some name in input.resource.tenant_restriction_headers
    value := data.metadata.tenants[lower(name)]
}
