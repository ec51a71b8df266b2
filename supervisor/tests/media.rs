//! Real media: ffmpeg's fragmented MP4 through publish, ingest, relay and watch, then
//! decoded by ffmpeg again.

mod common;

use std::process::Stdio;
use std::time::Duration;

use api::client::EndReason;
use common::{Stack, TEST_TIMEOUT};
use tokio::io::AsyncBufReadExt;

const SECONDS: u32 = 5;
const FPS: u32 = 30;
const GOP: u32 = 30;

fn ffmpeg_available() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_stream_plays_from_the_joins_keyframe() {
    if !ffmpeg_available() {
        if std::env::var_os("CI").is_some() {
            panic!("ffmpeg is required in CI (the test command installs it)");
        }
        eprintln!("skipped: ffmpeg not installed (the README's test command installs it)");
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let source = format!("testsrc2=size=320x180:rate={FPS}:duration={SECONDS}");
        let audio = format!("sine=frequency=440:duration={SECONDS}");
        let gop = GOP.to_string();
        let mut ffmpeg = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", &source])
            .args(["-f", "lavfi", "-i", &audio])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"])
            .args(["-g", &gop, "-sc_threshold", "0", "-c:a", "libopus", "-f", "mp4"])
            .args(["-movflags", "cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame"])
            .args(["-flush_packets", "1", "pipe:1"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ffmpeg");
        let media: Stdio = ffmpeg
            .stdout
            .take()
            .expect("ffmpeg stdout")
            .try_into()
            .expect("pipe");
        let mut publisher = stack
            .tokio_ghost()
            .args(["publish", "--name", "film", "--input", "-", "--json"])
            .stdin(media)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ghost publish");
        let mut lines =
            tokio::io::BufReader::new(publisher.stdout.take().expect("stdout")).lines();
        let live: api::client::Live =
            serde_json::from_str(&lines.next_line().await.expect("read").expect("line"))
                .expect("json");
        let id = live.stream_id;

        // Join in the middle of the second group.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let out = stack.dir.path().join("watched.mp4");
        let watched = stack
            .tokio_ghost()
            .args(["watch", "film", "--json", "--output"])
            .arg(&out)
            .output()
            .await
            .expect("ghost watch");
        assert!(
            watched.status.success(),
            "watch failed: {}",
            String::from_utf8_lossy(&watched.stderr)
        );
        let summary: api::client::WatchSummary =
            serde_json::from_slice(&watched.stdout).expect("summary");
        assert_eq!(summary.end_reason, EndReason::Ended, "{summary:?}");
        assert_eq!(summary.stream_id, id);
        assert_eq!(summary.skipped_groups, 0, "{summary:?}");
        let first_group = summary.first_group.expect("first group");
        assert!(first_group >= 1, "joined mid-stream: {summary:?}");
        assert!(ffmpeg.wait().await.expect("ffmpeg").success());
        assert!(publisher.wait().await.expect("publisher").success());

        // ffmpeg decodes it without a single error...
        let decode = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&out)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg decode");
        assert!(decode.status.success());
        assert!(
            decode.stderr.is_empty(),
            "decode errors: {}",
            String::from_utf8_lossy(&decode.stderr)
        );
        // ...every video frame from the join's keyframe on, and the first is a keyframe.
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame"])
            .args(["-of", "csv=p=0"])
            .arg(&out)
            .output()
            .expect("ffprobe");
        let frames: Vec<String> = String::from_utf8_lossy(&probe.stdout)
            .lines()
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let expected = (SECONDS * FPS) as u64 - first_group * u64::from(GOP);
        println!(
            "ffmpeg: joined at group {first_group}, decoded {} video frames (expected {expected}), first keyframe {:?}, {} bytes",
            frames.len(),
            frames.first(),
            std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0)
        );
        assert_eq!(frames.first().map(String::as_str), Some("1"), "starts at a keyframe");
        assert_eq!(frames.len() as u64, expected);
        let keyframes = frames.iter().filter(|f| f.as_str() == "1").count() as u64;
        assert_eq!(keyframes, expected / u64::from(GOP), "one keyframe per group");
    })
    .await
    .expect("test timed out");
}
