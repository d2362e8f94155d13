"""Deployment to AWS: the packaged CloudFormation (`python -m infra package`) and the first admin key."""
