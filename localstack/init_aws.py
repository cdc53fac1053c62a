"""Create the DynamoDB tables and SQS queues described by the JSON files beside this script.

Idempotent: existing tables and queues are left as they are. Used by scripts/stack.sh (with the
LocalStack virtualenv's boto3) and, for people with Docker, as a LocalStack ready hook
(docker-compose.yml mounts it into /etc/localstack/init/ready.d/).

Environment: AWS_ENDPOINT_URL (default http://127.0.0.1:4566), AWS_REGION (default us-east-1),
ZX_TABLE_PREFIX / ZX_QUEUE_PREFIX to create a renamed copy (the tests use their own names).
"""

import json
import os
import pathlib
import sys

import boto3
from botocore.exceptions import ClientError

HERE = pathlib.Path(__file__).resolve().parent


def client(service):
    return boto3.client(
        service,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def create_tables():
    ddb = client("dynamodb")
    prefix = os.environ.get("ZX_TABLE_PREFIX", "")
    for path in sorted((HERE / "dynamodb").glob("*.json")):
        spec = json.loads(path.read_text())
        spec["TableName"] = prefix + spec["TableName"]
        ttl = spec.pop("TimeToLiveAttribute", None)
        try:
            ddb.create_table(**spec)
            print(f"table {spec['TableName']}: created")
        except ClientError as err:
            if err.response["Error"]["Code"] != "ResourceInUseException":
                raise
            print(f"table {spec['TableName']}: exists")
        ddb.get_waiter("table_exists").wait(TableName=spec["TableName"])
        if ttl:
            ddb.update_time_to_live(
                TableName=spec["TableName"],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl},
            )


def create_queues():
    sqs = client("sqs")
    prefix = os.environ.get("ZX_QUEUE_PREFIX", "")
    spec = json.loads((HERE / "sqs" / "queues.json").read_text())
    for queue in spec["queues"]:
        dlq_url = sqs.create_queue(QueueName=prefix + queue["deadLetterQueue"])["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec["maxReceiveCount"])}
        )
        attributes = {
            "RedrivePolicy": redrive,
            "VisibilityTimeout": str(queue["visibilityTimeout"]),
        }
        try:
            sqs.create_queue(QueueName=prefix + queue["name"], Attributes=attributes)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            # Created by an earlier version of this file: bring it up to date.
            url = sqs.get_queue_url(QueueName=prefix + queue["name"])["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        print(f"queue {prefix + queue['name']} (dlq {prefix + queue['deadLetterQueue']}): ready")


def create_topics():
    """The order-events and account-notices topics, each with a queue subscribed (raw
    delivery) so events and notices (an e-mail change's code) can be read locally the way a
    downstream consumer (the shop's mailer) would."""
    sns, sqs = client("sns"), client("sqs")
    prefix = os.environ.get("ZX_QUEUE_PREFIX", "")
    spec = json.loads((HERE / "sqs" / "queues.json").read_text())
    for topic in spec.get("topics", []):
        arn = sns.create_topic(Name=prefix + topic["name"])["TopicArn"]
        queue_url = sqs.create_queue(QueueName=prefix + topic["subscriberQueue"])["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
        print(f"topic {arn} -> queue {prefix + topic['subscriberQueue']}: ready")


def delete_prefixed():
    """Deletes what a prefixed run created (ZX_TABLE_PREFIX / ZX_QUEUE_PREFIX must be set):
    the benchmark's own copies of the tables, queues and topic."""
    table_prefix = os.environ.get("ZX_TABLE_PREFIX", "")
    queue_prefix = os.environ.get("ZX_QUEUE_PREFIX", "")
    if not table_prefix or not queue_prefix:
        sys.exit("--delete needs ZX_TABLE_PREFIX and ZX_QUEUE_PREFIX (it never deletes the shop's own)")
    ddb, sqs, sns = client("dynamodb"), client("sqs"), client("sns")
    for path in sorted((HERE / "dynamodb").glob("*.json")):
        name = table_prefix + json.loads(path.read_text())["TableName"]
        try:
            ddb.delete_table(TableName=name)
        except ClientError:
            pass
    spec = json.loads((HERE / "sqs" / "queues.json").read_text())
    names = [q[k] for q in spec["queues"] for k in ("name", "deadLetterQueue")]
    names += [t["subscriberQueue"] for t in spec.get("topics", [])]
    for name in names:
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue_prefix + name)["QueueUrl"])
        except ClientError:
            pass
    for topic in spec.get("topics", []):
        for existing in sns.list_topics().get("Topics", []):
            if existing["TopicArn"].endswith(":" + queue_prefix + topic["name"]):
                sns.delete_topic(TopicArn=existing["TopicArn"])
    print(f"deleted the tables, queues and topic prefixed {table_prefix!r} / {queue_prefix!r}")


# Runs on import too: LocalStack's ready hooks execute the file, whatever its __name__.
if "--delete" in sys.argv:
    delete_prefixed()
else:
    create_tables()
    create_queues()
    create_topics()
sys.stdout.flush()
