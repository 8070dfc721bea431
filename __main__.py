"""modelstack: one Pulumi program from a trained model to a monitored service.

Thin on purpose: load and validate the stack config (nothing is registered if
it is bad), build the components in order, export what operators look at.
Never import torch here: it would land on every `pulumi preview`.
"""

import pulumi

from components.cluster import kubernetes_provider
from components.config import ConfigError, load_stack_config
from components.model_service import ModelService, ModelServiceArgs

try:
    cfg = load_stack_config()
except ConfigError as exc:
    # RunError: the CLI prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(exc)) from None

k8s_provider = kubernetes_provider(cfg)

service = ModelService(
    "serving",
    ModelServiceArgs.from_config(cfg),
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)

pulumi.export("namespace", service.namespace)
pulumi.export("modelName", cfg.model_name)
pulumi.export("recipe", cfg.recipe.name)
