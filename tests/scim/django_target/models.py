"""The user and group models django-scim2 serves (its SCIM columns mixed into plain Django models)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from django.utils import timezone
from django_scim.models import AbstractSCIMGroupMixin, AbstractSCIMUserMixin


class ScimGroup(AbstractSCIMGroupMixin):
    name = models.CharField(max_length=254, unique=True)

    class Meta:
        app_label = "django_target"


class ScimUser(AbstractSCIMUserMixin, AbstractBaseUser):
    username = models.CharField(max_length=254, unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    groups = models.ManyToManyField(ScimGroup, related_name="user_set", blank=True)

    USERNAME_FIELD = "username"
    objects: Any = BaseUserManager()

    class Meta:
        app_label = "django_target"

    @property
    def scim_groups(self) -> Any:
        return self.groups
