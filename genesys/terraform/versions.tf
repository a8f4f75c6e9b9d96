# The Genesys Cloud side of emr-edge, as CX as Code. See genesys/README.md.
# The provider itself is configured by the caller (examples/main.tf): this
# module only names it.
terraform {
  required_version = ">= 1.3"
  required_providers {
    genesyscloud = {
      source  = "mypurecloud/genesyscloud"
      version = ">= 1.40.0"
    }
  }
}
