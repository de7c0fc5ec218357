package aigate.tenant_restriction_test

import data.aigate.tenant_restriction

test_chatgpt_gets_its_workspace_header if {
    headers := tenant_restriction.inject_headers with input as {"resource": {"tenant_restriction_headers": ["ChatGPT-Allowed-Workspace-Id"]}}
        with data.metadata as {"tenants": {"chatgpt-allowed-workspace-id": "ws-1"}}
    headers == {"ChatGPT-Allowed-Workspace-Id": "ws-1"}
}

test_services_without_tenant_headers_get_none if {
    headers := tenant_restriction.inject_headers with input as {"resource": {"tenant_restriction_headers": []}}
        with data.metadata as {"tenants": {}}
    count(headers) == 0
}
