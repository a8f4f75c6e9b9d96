# What emr-edge's configuration needs (examples/ shows where each goes).

output "oauth_client_id" {
  description = "emr-edge's OAuth client id: the value of the variable genesys.client_id_env names."
  value       = genesyscloud_oauth_client.emr_edge.client_id
}

output "oauth_client_secret" {
  description = "emr-edge's OAuth client secret: the value of the variable genesys.client_secret_env names."
  value       = genesyscloud_oauth_client.emr_edge.client_secret
  sensitive   = true
}

output "emergency_group_ids" {
  description = "Every emergency group's id, by its key in emergency_groups."
  value       = local.group_ids
}

output "default_group" {
  description = "emr-edge's genesys.default_group."
  value       = local.group_ids[var.default_group]
}

output "groups_by_incident_type" {
  description = "emr-edge's genesys.groups_by_incident_type."
  value       = { for incident_type, key in var.groups_by_incident_type : incident_type => local.group_ids[key] }
}

output "datatable_id" {
  description = "emr-edge's genesys.datatable.id (its row_key is \"{group}\": rows are keyed by group id)."
  value       = genesyscloud_architect_datatable.routing.id
}

output "data_action_ids" {
  description = "The data actions' ids, by name."
  value       = { for k, a in genesyscloud_integration_action.action : a.name => a.id }
}

output "flow_id" {
  description = "The emergency inbound flow's id."
  value       = genesyscloud_flow.emergency_inbound.id
}
