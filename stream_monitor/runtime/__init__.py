"""The Kafka side: the consumer loop, delivery, the checkpoint (the only commit site), rebalances."""
