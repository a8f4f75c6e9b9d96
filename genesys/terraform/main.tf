# emr-edge's Genesys Cloud side: its role and OAuth client, the routing data
# table (from genesys/datatable.schema.json, the one definition the driver
# and the simulator also read), the emergency groups, the Web Services Data
# Actions integration with its credential and the data actions from
# genesys/data-actions/*.json, and the inbound flow from
# genesys/flows/emergency-inbound.yaml. genesys/README.md walks through it.

data "genesyscloud_auth_division_home" "home" {}

locals {
  division_id = var.division_id != "" ? var.division_id : data.genesyscloud_auth_division_home.home.id

  # The routing table's columns, in their display order.
  schema  = jsondecode(file("${path.module}/../datatable.schema.json"))
  columns = [for name in sort([for n, p in local.schema.properties : format("%03d:%s", p.displayOrder, n)]) : split(":", name)[1]]

  # The actions that call emr-edge (the Web Services Data Actions
  # integration) and the one that asks Genesys itself (the Genesys Cloud
  # Data Actions integration). Their URLs name the placeholder host
  # https://emr-edge.example, replaced here by emr_edge_url.
  emr_actions = {
    incident_status = jsondecode(file("${path.module}/../data-actions/incident-status.json"))
    group_routing   = jsondecode(file("${path.module}/../data-actions/group-routing.json"))
  }
  genesys_actions = {
    agents_on_queue = jsondecode(file("${path.module}/../data-actions/agents-on-queue.json"))
  }
  placeholder_host = "https://emr-edge.example"

  group_ids = { for key, g in genesyscloud_architect_emergencygroup.group : key => g.id }
}

# --- emr-edge's role and OAuth client -----------------------------------
# Exactly what emr-edge calls: read and switch emergency groups; read the
# table's rows at a restart, update a row, create a missing one. The same
# list is in genesys/README.md (a test holds the two together).

resource "genesyscloud_auth_role" "emr_edge" {
  name        = "${var.name_prefix} switch"
  description = "emr-edge: switches emergency groups and writes the routing table's rows"
  permission_policies {
    domain      = "routing"
    entity_name = "emergencyGroup"
    action_set  = ["view", "edit"]
  }
  permission_policies {
    domain      = "architect"
    entity_name = "datatable"
    action_set  = ["view"]
  }
  permission_policies {
    domain      = "architect"
    entity_name = "datatableRow"
    action_set  = ["add", "edit"]
  }
}

resource "genesyscloud_oauth_client" "emr_edge" {
  name                          = var.name_prefix
  description                   = "emr-edge (Envoy filter): its name is what Genesys stamps as modifiedByApp on its writes"
  authorized_grant_type         = "CLIENT-CREDENTIALS"
  access_token_validity_seconds = var.token_lifetime_seconds
  state                         = "active"
  # A client-credentials client has no scopes: its rights are this role, on
  # the division that holds the groups and the table. Groups or a table in
  # another division need a roles block for that division too.
  roles {
    role_id     = genesyscloud_auth_role.emr_edge.id
    division_id = local.division_id
  }
}

# --- The routing table ---------------------------------------------------

resource "genesyscloud_architect_datatable" "routing" {
  name        = var.datatable_name
  division_id = local.division_id
  description = "emr-edge: one row per emergency group (genesys/datatable.schema.json)"
  dynamic "properties" {
    for_each = local.columns
    content {
      name  = properties.value
      type  = local.schema.properties[properties.value].type
      title = local.schema.properties[properties.value].title
      # Booleans default to false, strings to "" (the schema's defaults);
      # the key has none.
      default = properties.value == "key" ? null : tostring(lookup(local.schema.properties[properties.value], "default", ""))
    }
  }
}

# One row per group, so a flow's Data Table Lookup finds it before the first
# incident (emr-edge would create it with a POST on its first write anyway).
resource "genesyscloud_architect_datatable_row" "group" {
  for_each     = genesyscloud_architect_emergencygroup.group
  datatable_id = genesyscloud_architect_datatable.routing.id
  key_value    = each.value.id
  properties_json = jsonencode(merge(
    { for c in local.columns : c => "" if c != "key" && local.schema.properties[c].type == "string" },
    { enabled = false }
  ))
  # emr-edge rewrites the row's columns with every switch: without this, the
  # next apply would put the empty row back while an emergency is on.
  lifecycle {
    ignore_changes = [properties_json]
  }
}

# --- The emergency groups ------------------------------------------------

resource "genesyscloud_architect_emergencygroup" "group" {
  for_each    = var.emergency_groups
  name        = each.value.name
  description = each.value.description
  division_id = local.division_id
  # `enabled` is the emergency switch, and emr-edge owns it. The provider
  # treats it as configuration with a default of false: without this, the
  # next apply after emr-edge switched a group on would silently switch it
  # off in the middle of an emergency.
  lifecycle {
    ignore_changes = [enabled]
  }
}

# --- The integration whose data actions call emr-edge ---------------------

resource "genesyscloud_integration_credential" "emr_edge" {
  name                 = "${var.name_prefix} status"
  credential_type_name = "basicAuth"
  fields = {
    userName = var.emr_status_username
    password = var.emr_status_password
  }
}

resource "genesyscloud_integration" "emr_edge" {
  intended_state   = "ENABLED"
  integration_type = "custom-rest-actions"
  config {
    name = "${var.name_prefix} status"
    credentials = {
      basicAuth = genesyscloud_integration_credential.emr_edge.id
    }
  }
}

# --- The data action that asks Genesys itself -----------------------------
# Agents on queue, for the flow's walk over the queues. Its own client and
# role (analytics:queueObservation:view), so emr-edge's role stays exactly
# what emr-edge needs.

resource "genesyscloud_auth_role" "flow_lookups" {
  name        = "${var.name_prefix} flow lookups"
  description = "The emergency flow's data action: on-queue agents of a queue"
  permission_policies {
    domain      = "analytics"
    entity_name = "queueObservation"
    action_set  = ["view"]
  }
}

resource "genesyscloud_oauth_client" "flow_lookups" {
  name                          = "${var.name_prefix} flow lookups"
  description                   = "Used by the Genesys Cloud Data Actions integration of the emergency flow"
  authorized_grant_type         = "CLIENT-CREDENTIALS"
  access_token_validity_seconds = var.token_lifetime_seconds
  state                         = "active"
  roles {
    role_id     = genesyscloud_auth_role.flow_lookups.id
    division_id = local.division_id
  }
}

resource "genesyscloud_integration_credential" "flow_lookups" {
  name                 = "${var.name_prefix} flow lookups"
  credential_type_name = "pureCloudOAuthClient"
  fields = {
    clientId     = genesyscloud_oauth_client.flow_lookups.client_id
    clientSecret = genesyscloud_oauth_client.flow_lookups.client_secret
  }
}

resource "genesyscloud_integration" "flow_lookups" {
  intended_state   = "ENABLED"
  integration_type = "purecloud-data-actions"
  config {
    name = "${var.name_prefix} flow lookups"
    credentials = {
      pureCloudOAuthClient = genesyscloud_integration_credential.flow_lookups.id
    }
  }
}

# --- The data actions, from genesys/data-actions/*.json -------------------

resource "genesyscloud_integration_action" "action" {
  for_each = merge(
    { for k, a in local.emr_actions : k => {
      definition     = a
      integration_id = genesyscloud_integration.emr_edge.id
      category       = genesyscloud_integration.emr_edge.config[0].name
      url            = replace(a.config.request.requestUrlTemplate, local.placeholder_host, var.emr_edge_url)
    } },
    { for k, a in local.genesys_actions : k => {
      definition     = a
      integration_id = genesyscloud_integration.flow_lookups.id
      category       = genesyscloud_integration.flow_lookups.config[0].name
      url            = a.config.request.requestUrlTemplate
    } },
  )
  name                   = each.value.definition.name
  category               = each.value.category
  integration_id         = each.value.integration_id
  secure                 = each.value.definition.secure
  config_timeout_seconds = 10
  contract_input         = jsonencode(each.value.definition.contract.input.inputSchema)
  contract_output        = jsonencode(each.value.definition.contract.output.successSchema)
  config_request {
    request_url_template = each.value.url
    request_type         = each.value.definition.config.request.requestType
    request_template     = each.value.definition.config.request.requestTemplate
    headers              = each.value.definition.config.request.headers
  }
  config_response {
    translation_map          = each.value.definition.config.response.translationMap
    translation_map_defaults = each.value.definition.config.response.translationMapDefaults
    success_template         = each.value.definition.config.response.successTemplate
  }
}

# --- The flow --------------------------------------------------------------
# Published by the provider (it runs Archy's publish itself). Names, not ids,
# reach the flow: Archy resolves them at publish time.

resource "genesyscloud_flow" "emergency_inbound" {
  filepath          = "${path.module}/../flows/emergency-inbound.yaml"
  file_content_hash = filesha256("${path.module}/../flows/emergency-inbound.yaml")
  substitutions = {
    flow_name                = var.flow_name
    flow_language            = var.flow_language
    division_name            = data.genesyscloud_auth_division_home.home.name
    schedule_group_name      = var.schedule_group_name
    emergency_group_name     = genesyscloud_architect_emergencygroup.group[var.default_group].name
    emergency_group_row_key  = genesyscloud_architect_emergencygroup.group[var.default_group].id
    datatable_name           = genesyscloud_architect_datatable.routing.name
    emr_integration_name     = genesyscloud_integration.emr_edge.config[0].name
    lookups_integration_name = genesyscloud_integration.flow_lookups.config[0].name
    normal_queue_name        = var.normal_queue_name
    fallback_queue_name      = var.fallback_queue_name
  }
  # The flow names the data actions by the names in their JSON files.
  depends_on = [
    genesyscloud_architect_datatable_row.group,
    genesyscloud_integration_action.action,
  ]
}
