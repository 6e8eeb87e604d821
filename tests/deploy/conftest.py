from tests.deploy.images import app_container, app_images, docker_api

__all__ = ["app_container", "app_images", "docker_api"]
