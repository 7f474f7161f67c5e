"""Infrastructure: `infra.sandbox` (a local AWS IoT Jobs stand-in) and `infra/aws` templates."""
