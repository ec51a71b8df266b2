//! The `ghost` command line. Flags, JSON fields and exit codes are a stable interface.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::exit::{self, Exit};
use clients::{bench, publish, watch};
use orchestrator::runtime::{Backend, Runtime};
use orchestrator::stack::{StateDir, default_state_dir};

mod commands;
mod lifecycle;

pub use crate::args::*;

use commands::*;
use lifecycle::*;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match crate::config::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return e.report(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghost: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of the output went away (`ghost status | head -1`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            eprintln!("ghost: {e:#}");
            exit::code_of(&e)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<exit::StdoutClosed>().is_some()
}

async fn run(cli: Cli) -> Result<i32> {
    let state = StateDir::new(cli.state_dir.clone().unwrap_or_else(default_state_dir));
    let ca = cli.ca.clone().unwrap_or_else(|| state.ca());
    match cli.command {
        Cmd::Up(args) if args.detach => {
            prepare_certificate(&state, &args).await?;
            up_detached(&state, &args).await
        }
        Cmd::Up(args) => {
            prepare_certificate(&state, &args).await?;
            server::telemetry::init(Default::default(), "warn");
            daemon(&state, &args, true).await
        }
        Cmd::Daemon(args) => {
            // The daemon's output (its stdout and stderr already point at the log, from
            // `ghost up -d`) goes into supervisor.log, rotated like the services' logs.
            let limits = args.limits.limits(args.relay_capacity)?;
            let path = state.logs().join("supervisor.log");
            let rotation = orchestrator::logfile::Rotation {
                max_size: limits.log_max_size,
                max_files: limits.log_max_files,
            };
            let log = orchestrator::logfile::LogFile::open(&path, rotation)
                .and_then(orchestrator::logfile::LogFile::with_stdio)
                .with_context(|| format!("opening {}", path.display()))?;
            server::telemetry::init_with_writer(
                Default::default(),
                "info",
                orchestrator::logfile::Log::new(log),
            );
            daemon(&state, &args, false).await
        }
        Cmd::Down => down(&state).await,
        Cmd::Status { json } => status(&state, json).await,
        Cmd::Streams { json, gateway } => streams(&state, json, gateway).await,
        Cmd::Logs(args) => crate::logs::run(&state, args).await,
        Cmd::Publish(args) => publish_cmd(&state, ca, args).await,
        Cmd::Watch(args) => watch_cmd(&state, ca, args).await,
        Cmd::Scale {
            what: ScaleTarget::Relays,
            count,
        } => {
            let stack = state.read()?;
            let scaled: api::admin::Scale = admin_post(
                &state,
                &format!("{}/api/scale", stack.supervisor_url),
                &api::admin::Scale { relays: count },
            )
            .await?;
            out!("relays: {}", scaled.relays);
            Ok(exit::OK)
        }
        Cmd::Keys(c) => crate::keys::run(&state, c),
        Cmd::Chaos(c) => chaos(&state, c).await,
        Cmd::Bench(cmd) => {
            let stack = state.read()?;
            let target = bench::Target {
                ingest_addr: stack.ingest_addr,
                gateway_url: stack.gateway_url,
                supervisor_url: stack.supervisor_url,
                ca: state.ca(),
            };
            match cmd {
                BenchCmd::Fanout(args) => {
                    let json = args.json;
                    let run = bench::fanout(&target, args).await?;
                    if json {
                        out!("{}", serde_json::to_string(&run.report)?);
                    } else {
                        print_raw(bench::table(&run.report).as_bytes())?;
                    }
                    for (why, count) in &run.failures {
                        eprintln!("ghost: {count} failed: {why}");
                    }
                    match &run.profile {
                        Some(Ok(file)) => eprintln!(
                            "relay profile written to {} (perf report -i {})",
                            file.display(),
                            file.display()
                        ),
                        Some(Err(e)) => eprintln!("ghost: no relay profile: {e}"),
                        None => {}
                    }
                    run.verdict()?;
                }
                BenchCmd::Lab(args) => {
                    let progress = |line: &str| eprintln!("ghost: {line}");
                    let report = clients::lab::run(&target, &args, &progress).await?;
                    print_raw(clients::lab::table(&report).as_bytes())?;
                    for cell in &report.cells {
                        for (why, count) in &cell.failures {
                            let (carrier, path) = (&cell.carrier, &cell.report.impairment);
                            eprintln!("ghost: {carrier} over {path}: {count} failed: {why}");
                        }
                    }
                    eprintln!(
                        "lab figures written to {} (lab.json, delay-rtt*ms.svg)",
                        args.out.display()
                    );
                    clients::lab::verdict(&report)?;
                }
            }
            Ok(exit::OK)
        }
        Cmd::Completions { shell } => {
            print_raw(&completions(shell))?;
            Ok(exit::OK)
        }
        Cmd::Man => {
            print_raw(&man_page()?)?;
            Ok(exit::OK)
        }
        Cmd::Config(c) => crate::config::run(&state, c),
        Cmd::Monitoring(c) => crate::monitoring::run(&state, c),
        Cmd::Images(ImagesCmd::Build { bin_dir }) => {
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => beside_ghost()?,
            };
            let docker = orchestrator::runtime::docker::connect().await?;
            let progress = |line: &str| eprintln!("ghost: {line}");
            let images =
                orchestrator::runtime::docker::build_images(&docker, &bin_dir, &progress).await?;
            let mut refs: Vec<&String> = images.values().collect();
            refs.sort();
            for r in refs {
                out!("{r}");
            }
            Ok(exit::OK)
        }
    }
}

/// `shell`'s completion script for `ghost`, from the command line's own definition.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    // Some generators (fish's) offer hidden subcommands: leave the daemon out by hand.
    let full = crate::config::command();
    let mut shown = clap::Command::new("ghost")
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown, "ghost", &mut script);
    script
}

/// The manual page, ghost(1), in roff, from the command line's own definition.
pub fn man_page() -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(crate::config::command())
        .render(&mut page)
        .context("rendering the manual page")?;
    Ok(page)
}

/// Writes `bytes` to standard output as they are; a reader that went away ends quietly.
fn print_raw(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(exit::stdout_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_manual_name_every_command_but_the_hidden_daemon() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).expect("utf-8");
        let fish = String::from_utf8(completions(clap_complete::Shell::Fish)).expect("utf-8");
        let zsh = String::from_utf8(completions(clap_complete::Shell::Zsh)).expect("utf-8");
        let man = String::from_utf8(man_page().expect("man page")).expect("utf-8");
        assert!(bash.contains("complete -F _ghost"), "{bash}");
        assert!(zsh.starts_with("#compdef ghost"), "{zsh}");
        for command in [
            "up", "down", "status", "publish", "watch", "keys", "chaos", "bench",
        ] {
            assert!(
                fish.contains(&format!("-a \"{command}\"")),
                "fish lacks {command}"
            );
            assert!(
                man.contains(&format!("ghost\\-{command}")),
                "the manual lacks {command}"
            );
        }
        assert!(
            !fish.contains("-a \"daemon\""),
            "the hidden daemon is offered"
        );
        assert!(man.contains(".TH ghost 1"), "{man}");
        assert!(
            bash.contains("--acme-directory"),
            "ghost up's flags are completed"
        );
    }
}
