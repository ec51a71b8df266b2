//! The state directory's files a service reads, as Swarm secrets: what each kind gets, where
//! it is mounted, and the secrets made for them and removed once no service uses them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use api::status::Kind;
use base64::Engine as _;
use bollard::Docker;
use bollard::models::{
    Secret, SecretSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
};
use bollard::query_parameters::ListSecretsOptionsBuilder;
use sha2::{Digest, Sha256};

use crate::runtime::docker::{self, LABEL_STACK};
use crate::runtime::{Error, Result};
use crate::services;
use crate::stack::StateDir;

/// One file a relay reads, as a Swarm secret: where it appears in the container, and its
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SecretFile {
    pub(super) target: String,
    pub(super) data: Vec<u8>,
}

impl SecretFile {
    /// The secret's name: the stack, where the file goes and a hash of its content, so a
    /// renewed file is a new secret and a relay's secrets never change under it.
    pub(super) fn name(&self, stack: &str) -> String {
        let hash = Sha256::digest(&self.data);
        let hash: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        let slug: String = self
            .target
            .trim_start_matches(docker::MOUNT)
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut name = format!("ghost-{stack}-{slug}");
        // Swarm takes names of 64 characters at most.
        name.truncate(64 - hash.len() - 1);
        format!("{name}-{hash}")
    }
}

/// The files a `kind` service reads, read now from the state directory at `root`: each
/// file its flags name, and each file of a directory they name.
pub(super) fn secret_files(kind: Kind, root: &Path) -> Result<Vec<SecretFile>> {
    let state = StateDir::new(root);
    let mut out = Vec::new();
    for file in services::service(kind).files() {
        let path = file.path_in(&state);
        let target = docker::mount_point(file);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(Error::io("reading", &path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for entry in entries {
                let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                out.push(SecretFile {
                    target: format!("{target}/{name}"),
                    data: std::fs::read(&entry).map_err(Error::io("reading", &entry))?,
                });
            }
        } else {
            out.push(SecretFile {
                target,
                data: std::fs::read(&path).map_err(Error::io("reading", &path))?,
            });
        }
    }
    Ok(out)
}

/// The Swarm secrets of stack `stack`.
async fn stack_secrets(
    docker: &Docker,
    stack: &str,
) -> Result<Vec<Secret>, bollard::errors::Error> {
    let label = format!("{LABEL_STACK}={stack}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let options = ListSecretsOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_secrets(Some(options)).await
}

/// Creates the secrets of stack `stack` for `files` that do not exist yet; returns their
/// references.
pub(super) async fn create(
    docker: &Docker,
    stack: &str,
    files: &[SecretFile],
) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
    let existing: HashMap<String, String> = stack_secrets(docker, stack)
        .await
        .map_err(Error::engine("listing the stack's secrets"))?
        .into_iter()
        .filter_map(|s| Some((s.spec?.name?, s.id?)))
        .collect();
    let uid = nix::unistd::Uid::current().to_string();
    let gid = nix::unistd::Gid::current().to_string();
    let mut out = Vec::new();
    for file in files {
        let name = file.name(stack);
        let id = match existing.get(&name) {
            Some(id) => id.clone(),
            None => {
                docker
                    .create_secret(SecretSpec {
                        name: Some(name.clone()),
                        labels: Some(HashMap::from([(
                            LABEL_STACK.to_string(),
                            stack.to_string(),
                        )])),
                        data: Some(base64::engine::general_purpose::STANDARD.encode(&file.data)),
                        ..Default::default()
                    })
                    .await
                    .map_err(Error::engine(format!("creating secret {name}")))?
                    .id
            }
        };
        out.push(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(file.target.clone()),
                uid: Some(uid.clone()),
                gid: Some(gid.clone()),
                mode: Some(0o400),
            }),
            secret_id: Some(id),
            secret_name: Some(name),
        });
    }
    Ok(out)
}

/// Removes the secrets of stack `stack` no service uses any more (earlier certificates),
/// but those in `keep`; those in use refuse, which is what keeps them.
pub(super) async fn prune(docker: &Docker, stack: &str, keep: &[TaskSpecContainerSpecSecrets]) {
    let Ok(secrets) = stack_secrets(docker, stack).await else {
        return;
    };
    for id in secrets.into_iter().filter_map(|s| s.id) {
        if keep
            .iter()
            .any(|k| k.secret_id.as_deref() == Some(id.as_str()))
        {
            continue;
        }
        let _ = docker.delete_secret(&id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_the_content_and_fit_swarms_limit() {
        let a = SecretFile {
            target: format!("{}/tls/relay.pem", docker::MOUNT),
            data: b"one".to_vec(),
        };
        let b = SecretFile {
            data: b"two".to_vec(),
            ..a.clone()
        };
        assert!(
            a.name("0a1b2c3d")
                .starts_with("ghost-0a1b2c3d-tls-relay-pem-")
        );
        assert_ne!(a.name("0a1b2c3d"), b.name("0a1b2c3d"));
        let long = SecretFile {
            target: format!("{}/{}", docker::MOUNT, "x".repeat(100)),
            data: Vec::new(),
        };
        assert!(long.name("0a1b2c3d").len() <= 64);
    }

    #[test]
    fn a_relay_reads_its_tls_directory_and_the_ticket_key_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let tls = state.tls_dir_of(identity::Role::Relay);
        std::fs::create_dir_all(&tls).expect("mkdir");
        std::fs::write(tls.join("relay.pem"), b"cert").expect("write");
        std::fs::write(tls.join("ca.pem"), b"ca").expect("write");
        std::fs::write(state.ticket_key(), b"key").expect("write");
        let control = state.tls_dir_of(identity::Role::Control);
        std::fs::create_dir_all(&control).expect("mkdir");
        std::fs::write(control.join("control.pem"), b"no").expect("write");
        let files = secret_files(Kind::Relay, dir.path()).expect("files");
        let targets: Vec<&str> = files.iter().map(|f| f.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/run/ghost/tls/ca.pem",
                "/run/ghost/tls/relay.pem",
                "/run/ghost/ticket.key"
            ]
        );
    }
}
