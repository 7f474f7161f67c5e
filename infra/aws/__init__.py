"""CloudFormation for running ca-migrate on AWS, and the tools that go with it.

Templates (YAML, shipped as package data beside this module):

- `orchestrator-iam.yaml` — the orchestrator's least-privilege policy and an operator role;
- `device-policy.yaml` — the AWS IoT policy devices need for the migration;
- `fleet.yaml` — optional wave thing groups and a job template;
- `runner.yaml` — the unattended runner (EventBridge Scheduler -> Lambda -> DynamoDB, SNS,
  CloudWatch alarms).

`infra.aws.cfn` reads them (intrinsic-function tags included) for checks and tests;
`infra.aws.package_lambda` builds the runner's deployment zip.
"""

from infra.aws.cfn import TEMPLATES_DIR, TemplateError, load_template, resolve, template_paths

__all__ = ["TEMPLATES_DIR", "TemplateError", "load_template", "resolve", "template_paths"]
