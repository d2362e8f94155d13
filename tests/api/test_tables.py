"""ensure_tables adds an index an older table lacks."""

from chalicelib import aws, models


def test_an_index_an_older_table_lacks_is_added(aws_in_process):
    dynamodb = aws.client("dynamodb")
    table = models.Request.Meta.table_name
    before = {i["IndexName"] for i in dynamodb.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]}
    assert "by_schedule" in before
    dynamodb.update_table(TableName=table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by_schedule"}}])
    models.ensure_tables()
    after = {i["IndexName"] for i in dynamodb.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]}
    assert after == before
