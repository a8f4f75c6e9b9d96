variable "name_prefix" {
  description = "Put before the name of everything this module creates, so two installs in one org do not collide."
  type        = string
  default     = "emr-edge"
}

variable "division_id" {
  description = "The division the emergency groups and the data table live in, and which the OAuth client's role is granted on. Empty: the home division."
  type        = string
  default     = ""
}

variable "emergency_groups" {
  description = "The emergency groups emr-edge drives, by a key of your choosing. Changing a name recreates the group with a new id (and emr-edge's config must follow)."
  type = map(object({
    name        = string
    description = optional(string, "Switched by emr-edge from incident tools")
  }))
  default = {
    default        = { name = "Default Emergency" }
    carrier_outage = { name = "Carrier Outage" }
  }
}

variable "default_group" {
  description = "The key (in emergency_groups) of the group an incident drives when nothing else says: emr-edge's genesys.default_group, and the group the flow checks."
  type        = string
  default     = "default"
}

variable "groups_by_incident_type" {
  description = "Incident type -> key in emergency_groups: emr-edge's genesys.groups_by_incident_type."
  type        = map(string)
  default     = { CARRIER_OUTAGE = "carrier_outage" }
}

variable "datatable_name" {
  description = "The routing table's name (the flow finds it by name)."
  type        = string
  default     = "EMR Routing"
}

variable "emr_edge_url" {
  description = "emr-edge's public base URL, as Genesys reaches it (https, no trailing slash): where the data actions call /emr/*."
  type        = string
  validation {
    condition     = can(regex("^https://[^/]+$", var.emr_edge_url))
    error_message = "emr_edge_url must be https://host[:port], with no path and no trailing slash."
  }
}

variable "emr_status_username" {
  description = "The basic credential's user name for emr-edge's /emr/* (emr-edge: status.auth kind basic, username_env)."
  type        = string
  default     = "genesys-data-actions"
}

variable "emr_status_password" {
  description = "The basic credential's password for emr-edge's /emr/* (emr-edge: status.auth password_env). Kept in Terraform state: protect the state."
  type        = string
  sensitive   = true
}

variable "token_lifetime_seconds" {
  description = "Lifetime of the OAuth client's tokens (300 to 172800)."
  type        = number
  default     = 86400
}

variable "flow_name" {
  description = "The inbound call flow's name."
  type        = string
  default     = "EMR Emergency Inbound"
}

variable "schedule_group_name" {
  description = "The schedule group the flow evaluates, together with the emergency group, at entry and after the menu or a failed transfer."
  type        = string
}

variable "normal_queue_name" {
  description = "The queue the flow's normal (non-emergency) path transfers to."
  type        = string
}

variable "fallback_queue_name" {
  description = "The queue the flow transfers to when every emergency queue failed or had nobody on queue."
  type        = string
}

variable "flow_language" {
  description = "The flow's default language."
  type        = string
  default     = "en-us"
}
