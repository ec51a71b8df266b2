//! Service images built from this machine's own static binaries: no base image, nothing
//! pulled (there is no registry to pull from).

use super::*;

pub(super) fn dockerfile(kind: Kind) -> &'static str {
    match kind {
        Kind::Control => include_str!("../../../../../images/control.Dockerfile"),
        Kind::Ingest => include_str!("../../../../../images/ingest.Dockerfile"),
        Kind::Relay => include_str!("../../../../../images/relay.Dockerfile"),
        Kind::Gateway => include_str!("../../../../../images/gateway.Dockerfile"),
    }
}

/// Builds (where missing) the four service images from the binaries in `bin_dir`, reporting
/// each step. Returns the image reference to run for each kind.
pub async fn build_images(
    docker: &Docker,
    bin_dir: &std::path::Path,
    progress: &crate::runtime::Progress,
) -> Result<HashMap<Kind, String>> {
    let mut images = HashMap::new();
    for service in &services::SERVICES {
        let kind = service.kind;
        let repo = format!("ghost-stream/{}", kind.as_str());
        let binary_path = bin_dir.join(service.binary);
        let Ok(binary) = std::fs::read(&binary_path) else {
            // No binary here (a host that only loaded the images): run what is loaded.
            let latest = format!("{repo}:latest");
            if let Err(source) = docker.inspect_image(&latest).await {
                return Err(Error::MissingImage {
                    binary: binary_path,
                    image: latest,
                    source: Box::new(source),
                });
            }
            images.insert(kind, latest);
            continue;
        };
        let mut hash = Sha256::new();
        hash.update(&binary);
        hash.update(dockerfile(kind).as_bytes());
        let tag: String = hash.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reference = format!("{repo}:{tag}");
        let latest = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(&repo)
            .tag("latest")
            .build();
        if docker.inspect_image(&reference).await.is_ok() {
            // `:latest` follows the binaries in use, so a shipped tarball of it is current.
            docker
                .tag_image(&reference, Some(latest))
                .await
                .map_err(Error::engine(format!("tagging {reference} as latest")))?;
            images.insert(kind, reference);
            continue;
        }
        progress(&format!(
            "building image {reference} ({} MB binary)",
            binary.len() / 1_000_000
        ));
        let context = tar_context(kind, &binary)?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&reference)
            .rm(true)
            .forcerm(true)
            .build();
        let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = build.next().await {
            let info = step.map_err(Error::engine(format!("building {reference}")))?;
            if let Some(detail) = info.error_detail {
                return Err(Error::Build {
                    image: reference,
                    message: detail.message.unwrap_or_default(),
                });
            }
        }
        docker
            .tag_image(&reference, Some(latest))
            .await
            .map_err(Error::engine(format!("tagging {reference} as latest")))?;
        images.insert(kind, reference);
    }
    Ok(images)
}

pub(super) fn tar_context(kind: Kind, binary: &[u8]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
            .map_err(|source| Error::BuildContext {
                doing: format!("adding {name} to the build context"),
                source,
            })
    };
    add("Dockerfile", dockerfile(kind).as_bytes(), 0o644)?;
    add(services::service(kind).binary, binary, 0o755)?;
    tar.into_inner().map_err(|source| Error::BuildContext {
        doing: "finishing the build context".into(),
        source,
    })
}
