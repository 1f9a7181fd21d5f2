# Filled by the decoding stage (see docs/contracts.md).
