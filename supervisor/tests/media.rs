//! Real media: ffmpeg's fragmented MP4 through publish, ingest, relay and watch, then
//! decoded by ffmpeg again.

mod common;

use std::time::Duration;

use api::client::EndReason;
use common::{Stack, TEST_TIMEOUT};

const SECONDS: u32 = 5;
const FPS: u32 = 30;
const GOP: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_stream_plays_from_the_joins_keyframe() {
    if !common::ffmpeg_available() {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let (id, mut ffmpeg, mut publisher) = stack.go_live("film", "libopus", Some(SECONDS)).await;

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
