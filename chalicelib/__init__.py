"""OpenMultiStack's runtime code, packaged with the Chalice app (deployed to Lambda)."""
