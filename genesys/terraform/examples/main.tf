# An org's whole emr-edge setup: `terraform init && terraform apply` here
# (genesys/README.md). The provider reads the admin client it applies with
# from GENESYSCLOUD_OAUTHCLIENT_ID and GENESYSCLOUD_OAUTHCLIENT_SECRET; that
# client is yours, not emr-edge's: this creates emr-edge's.

terraform {
  required_providers {
    genesyscloud = {
      source  = "mypurecloud/genesyscloud"
      version = ">= 1.40.0"
    }
  }
}

variable "aws_region" {
  description = "Your org's region as the provider names it, e.g. eu-west-1 (emr-edge's genesys.region takes the same name)."
  type        = string
}

variable "emr_edge_url" {
  type = string
}

variable "emr_status_password" {
  type      = string
  sensitive = true
}

provider "genesyscloud" {
  aws_region = var.aws_region
}

module "emr" {
  source              = "../"
  emr_edge_url        = var.emr_edge_url
  emr_status_password = var.emr_status_password
  schedule_group_name = "Support Hours"
  normal_queue_name   = "General Support"
  fallback_queue_name = "Emergency Overflow"
  emergency_groups = {
    default        = { name = "Default Emergency" }
    carrier_outage = { name = "Carrier Outage" }
  }
  default_group           = "default"
  groups_by_incident_type = { CARRIER_OUTAGE = "carrier_outage" }
}

# The `genesys` section of emr-edge's plugin configuration
# (docs/configuration.md), filled from the module's outputs:
#
#   terraform output -json emr_edge_genesys > genesys.json
#
# then put it under "genesys" in the config Envoy loads. The client id and
# secret go to Envoy as environment variables, never into the config:
#
#   EMR_GENESYS_CLIENT_ID=$(terraform output -raw oauth_client_id)
#   EMR_GENESYS_CLIENT_SECRET=$(terraform output -raw oauth_client_secret)
output "emr_edge_genesys" {
  value = {
    region                  = var.aws_region
    client_id_env           = "EMR_GENESYS_CLIENT_ID"
    client_secret_env       = "EMR_GENESYS_CLIENT_SECRET"
    driver                  = "emergency-group"
    default_group           = module.emr.default_group
    groups_by_incident_type = module.emr.groups_by_incident_type
    datatable = {
      id      = module.emr.datatable_id
      row_key = "{group}"
    }
  }
}

# emr-edge's `status` section: the data actions' basic credential
# (EMR_STATUS_USER is the module's emr_status_username, "genesys-data-actions"
# unless you changed it; EMR_STATUS_PASSWORD the password you gave).
output "emr_edge_status" {
  value = {
    auth = {
      kind         = "basic"
      username_env = "EMR_STATUS_USER"
      password_env = "EMR_STATUS_PASSWORD"
    }
  }
}

output "oauth_client_id" {
  value = module.emr.oauth_client_id
}

output "oauth_client_secret" {
  value     = module.emr.oauth_client_secret
  sensitive = true
}
