# Filled by the evaluation stage (see docs/contracts.md).
