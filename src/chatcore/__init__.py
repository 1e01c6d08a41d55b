"""chatcore: a chat backend core (domain, use cases, ports) independent of any framework."""
