# Filled by the features stage (see docs/contracts.md).
