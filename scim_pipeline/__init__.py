"""scim-pipeline: provision an IdP roster into the Delinea Platform or any RFC 7644 SCIM service provider."""
