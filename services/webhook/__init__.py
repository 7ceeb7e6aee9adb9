"""The webhook service: Stripe's signed events become status changes and notifications."""
