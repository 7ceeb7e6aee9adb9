"""The consumer: ride events from Kafka become Stripe Checkout Sessions and pending payments."""
