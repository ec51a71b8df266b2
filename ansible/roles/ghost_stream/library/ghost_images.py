#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: save images to a `docker save` tarball, or load one, only when needed."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: ghost_images
short_description: Idempotent docker save / docker load of the Ghost Stream images
description:
  - C(state=loaded) reads the image IDs recorded in a C(docker save) tarball's C(manifest.json),
    compares them with C(docker image inspect) of the same tags, and runs C(docker load) only
    when a tag is missing or points at another image.
  - C(state=saved) writes the tarball with C(docker save) only when it is missing or its
    manifest's image IDs differ from the local engine's images (written to a temporary file,
    then renamed into place).
options:
  path:
    description: The tarball.
    required: true
    type: path
  state:
    description: C(loaded) into the engine, or C(saved) from it.
    choices: [loaded, saved]
    default: loaded
    type: str
  images:
    description:
      - Image references (repository:tag). Required with C(state=saved).
      - With C(state=loaded), the tags that must be in the tarball (all of them when empty).
    type: list
    elements: str
    default: []
  docker:
    description: The docker CLI.
    type: str
    default: docker
"""

RETURN = r"""
images:
  description: Image ID by tag, as recorded in the tarball (after the action).
  returned: always
  type: dict
stale:
  description: Tags that were missing or pointed at another image before the action.
  returned: always
  type: list
"""


def manifest_ids(path):
    """{tag: image id} from the tarball's manifest.json (docker's legacy and OCI layouts)."""
    with tarfile.open(path, "r:") as tar:
        member = tar.getmember("manifest.json")
        handle = tar.extractfile(member)
        if handle is None:
            raise ValueError("manifest.json is not a file")
        manifest = json.load(handle)
    ids = {}
    for entry in manifest:
        config = os.path.basename(entry["Config"])
        if config.endswith(".json"):
            config = config[: -len(".json")]
        for tag in entry.get("RepoTags") or []:
            ids[tag] = "sha256:" + config
    return ids


def engine_ids(module, docker, tags):
    """{tag: image id} for the tags the local engine has (missing tags are left out)."""
    ids = {}
    for tag in tags:
        rc, out, _err = module.run_command([docker, "image", "inspect", "--format", "{{.Id}}", tag])
        if rc == 0 and out.strip():
            ids[tag] = out.strip()
    return ids


def stale_tags(wanted, have):
    return sorted(tag for tag, image_id in wanted.items() if have.get(tag) != image_id)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="loaded", choices=["loaded", "saved"]),
            images=dict(type="list", elements="str", default=[]),
            docker=dict(type="str", default="docker"),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    docker = module.params["docker"]
    images = module.params["images"]

    if module.params["state"] == "saved":
        if not images:
            module.fail_json(msg="images is required with state=saved")
        have = engine_ids(module, docker, images)
        missing = sorted(set(images) - set(have))
        if missing:
            module.fail_json(
                msg="images missing from the local engine (build them first): " + ", ".join(missing)
            )
        recorded = {}
        if os.path.exists(path):
            try:
                recorded = manifest_ids(path)
            except (OSError, KeyError, ValueError, tarfile.TarError):
                recorded = {}
        stale = stale_tags(have, recorded)
        if stale and not module.check_mode:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".ghost-images-", suffix=".tar", dir=directory)
            os.close(fd)
            try:
                rc, _out, err = module.run_command([docker, "save", "-o", tmp] + list(images))
                if rc != 0:
                    module.fail_json(msg="docker save failed", stderr=err, rc=rc)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        module.exit_json(changed=bool(stale), images=have, stale=stale)

    # state=loaded
    try:
        wanted = manifest_ids(path)
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        module.fail_json(msg="cannot read the manifest of %s: %s" % (path, exc))
    absent = sorted(set(images) - set(wanted))
    if absent:
        module.fail_json(msg="the tarball lacks these images: " + ", ".join(absent))
    stale = stale_tags(wanted, engine_ids(module, docker, sorted(wanted)))
    if stale and not module.check_mode:
        rc, out, err = module.run_command([docker, "load", "-i", path])
        if rc != 0:
            module.fail_json(msg="docker load failed", stdout=out, stderr=err, rc=rc)
        still = stale_tags(wanted, engine_ids(module, docker, sorted(wanted)))
        if still:
            module.fail_json(msg="after docker load these tags still differ: " + ", ".join(still))
    module.exit_json(changed=bool(stale), images=wanted, stale=stale)


if __name__ == "__main__":
    main()
