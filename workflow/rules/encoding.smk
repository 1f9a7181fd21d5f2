# Filled by the encoding stage (see docs/contracts.md).
