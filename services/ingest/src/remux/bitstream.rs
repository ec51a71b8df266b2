//! The few fields the remuxer reads out of codec bitstreams: picture sizes (H.264 and HEVC
//! sequence parameter sets, AV1 sequence headers, VP9 keyframe headers), AAC's sample rate
//! and frame length, and an Opus packet's duration.
//!
//! Each parser stops at the field it needs, so none has to understand a whole parameter set.
//! They run on bytes straight from a publisher: every read is bounds-checked and every
//! computation checked, and a value outside what the specification allows yields `None`
//! rather than a wrong size. (scuffle-h264 and scuffle-h265 parse whole parameter sets, but
//! with unchecked arithmetic on coded values, which a hostile SPS turns into a panic in
//! debug builds or a wrapped size in release builds.)

/// Reads bits most significant first.
struct Bits<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// `n` bits as an unsigned number, `n <= 32`.
    fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        let mut value = 0u64;
        for _ in 0..n {
            value = value << 1 | u64::from(self.bit()?);
        }
        u32::try_from(value).ok()
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.data.len().checked_mul(8)?).then(|| self.pos = end)
    }

    /// Unsigned Exp-Golomb (`ue(v)`); the specifications keep every value under 2^32.
    fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?))
    }

    /// Signed Exp-Golomb (`se(v)`).
    fn se(&mut self) -> Option<i64> {
        let code = i64::try_from(self.ue()?).ok()?;
        Some(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }
}

/// A NAL unit's payload without its emulation prevention bytes (the `03` in `00 00 03`).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// The cropped picture size an H.264 SPS NAL unit (header byte included) declares.
///
/// ISO/IEC 14496-10, 7.3.2.1.1; cropping per 7.4.2.1.1 (`CropUnitX`, `CropUnitY`).
pub(super) fn h264_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    if sps.first()? & 0x1f != 7 {
        return None;
    }
    let rbsp = unescape(sps.get(1..)?);
    let mut r = Bits::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = r.ue()?.checked_add(1)?;
    let height_in_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let crop = if r.bit()? {
        [r.ue()?, r.ue()?, r.ue()?, r.ue()?]
    } else {
        [0; 4]
    };
    let fields = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (unit_x, unit_y) = match chroma_array_type {
        0 => (1, fields),
        1 => (2, 2 * fields),
        2 => (2, fields),
        _ => (1, fields),
    };
    let width = width_in_mbs
        .checked_mul(16)?
        .checked_sub(unit_x * crop[0].checked_add(crop[1])?)?;
    let height = height_in_map_units
        .checked_mul(16 * fields)?
        .checked_sub(unit_y * crop[2].checked_add(crop[3])?)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// `scaling_list()` of 7.3.2.1.1.1, read only to be skipped.
fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()?).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The cropped picture size an HEVC SPS NAL unit (two header bytes included) declares.
///
/// ISO/IEC 23008-2, 7.3.2.2.1 and `profile_tier_level()` of 7.3.3; the conformance window
/// in units of `SubWidthC` / `SubHeightC` (table 6-1).
pub(super) fn hevc_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    if (sps.first()? >> 1) & 0x3f != 33 {
        return None;
    }
    let rbsp = unescape(sps.get(2..)?);
    let mut r = Bits::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let sub_layers = usize::try_from(r.bits(3)?).ok()?; // sps_max_sub_layers_minus1
    r.skip(1)?; // sps_temporal_id_nesting_flag
    // General profile space, tier, profile, compatibility and constraint flags (88 bits),
    // then general_level_idc.
    r.skip(88 + 8)?;
    let mut present = [(false, false); 8];
    for layer in present.iter_mut().take(sub_layers) {
        *layer = (r.bit()?, r.bit()?);
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - sub_layers))?; // reserved_zero_2bits
    }
    for &(profile, level) in present.iter().take(sub_layers) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    if chroma_format_idc == 3 {
        r.skip(1)?; // separate_colour_plane_flag: 4:4:4 crops in luma samples either way
    }
    let width = r.ue()?;
    let height = r.ue()?;
    let (sub_width, sub_height) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (width, height) = if r.bit()? {
        let [left, right, top, bottom] = [r.ue()?, r.ue()?, r.ue()?, r.ue()?];
        (
            width.checked_sub(sub_width * left.checked_add(right)?)?,
            height.checked_sub(sub_height * top.checked_add(bottom)?)?,
        )
    } else {
        (width, height)
    };
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// The largest frame size of the first AV1 sequence header OBU among `obus` (low overhead
/// bitstream format, as `av1C` `configOBUs` and AV1 samples hold them).
pub(super) fn av1_dimensions(mut obus: &[u8]) -> Option<(u32, u32)> {
    while !obus.is_empty() {
        let (obu_type, payload, next) = av1_obu(obus)?;
        if obu_type == AV1_OBU_SEQUENCE_HEADER {
            return av1_sequence_header_dimensions(payload);
        }
        obus = next;
    }
    None
}

const AV1_OBU_SEQUENCE_HEADER: u8 = 1;
const AV1_OBU_TEMPORAL_DELIMITER: u8 = 2;

/// An AV1 temporal unit without the temporal delimiter OBU it may start with: in MP4 the
/// sample is the delimiter (AV1 ISOBMFF binding, 2.4), so muxers leave it out.
pub(super) fn without_temporal_delimiter(temporal_unit: bytes::Bytes) -> bytes::Bytes {
    match av1_obu(&temporal_unit) {
        Some((AV1_OBU_TEMPORAL_DELIMITER, _, rest)) => {
            temporal_unit.slice(temporal_unit.len() - rest.len()..)
        }
        _ => temporal_unit,
    }
}

/// The first OBU of `data`: its type, its payload and what follows it. An OBU without a size
/// field runs to the end of `data`.
fn av1_obu(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let header = *data.first()?;
    if header & 0x80 != 0 {
        return None; // obu_forbidden_bit
    }
    let obu_type = (header >> 3) & 0x0f;
    let extension = header & 0x04 != 0;
    let has_size = header & 0x02 != 0;
    let mut pos = 1 + usize::from(extension);
    let size = if has_size {
        let (size, len) = leb128(data.get(pos..)?)?;
        pos += len;
        usize::try_from(size).ok()?
    } else {
        data.len().checked_sub(pos)?
    };
    let end = pos.checked_add(size)?;
    Some((obu_type, data.get(pos..end)?, data.get(end..)?))
}

/// AV1 `leb128()`: the value and the number of bytes it took (at most eight).
fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// AV1 specification 5.5: `sequence_header_obu()` up to `max_frame_height_minus_1`.
fn av1_sequence_header_dimensions(payload: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(payload);
    r.skip(3)?; // seq_profile
    r.skip(1)?; // still_picture
    if r.bit()? {
        // reduced_still_picture_header
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info = false;
        let mut buffer_delay_length = 0;
        if r.bit()? {
            // timing_info()
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.bit()? {
                // equal_picture_interval: num_ticks_per_picture_minus_1 as uvlc()
                uvlc(&mut r)?;
            }
            decoder_model_info = r.bit()?;
            if decoder_model_info {
                buffer_delay_length = usize::try_from(r.bits(5)?).ok()? + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.bit()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info && r.bit()? {
                // operating_parameters_info()
                r.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay && r.bit()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = r.bits(width_bits)?.checked_add(1)?;
    let height = r.bits(height_bits)?.checked_add(1)?;
    Some((width, height))
}

/// AV1 `uvlc()`, read only to be skipped.
fn uvlc(r: &mut Bits<'_>) -> Option<()> {
    let mut zeros = 0;
    while !r.bit()? {
        zeros += 1;
        if zeros >= 32 {
            return Some(());
        }
    }
    r.skip(zeros)
}

/// The frame size a VP9 keyframe's uncompressed header declares; `None` for any other frame.
///
/// VP9 bitstream specification 6.2: `uncompressed_header()` to `frame_size()`.
pub(super) fn vp9_dimensions(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(frame);
    if r.bits(2)? != 2 {
        return None; // frame_marker
    }
    let profile_low = r.bits(1)?;
    let profile = r.bits(1)? << 1 | profile_low;
    if profile == 3 {
        r.skip(1)?; // reserved_zero
    }
    if r.bit()? {
        return None; // show_existing_frame
    }
    if r.bit()? {
        return None; // frame_type: not a keyframe
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config()
    if profile >= 2 {
        r.skip(1)?; // ten_or_twelve_bit
    }
    let rgb = r.bits(3)? == 7;
    if !rgb {
        r.skip(1)?; // color_range
    }
    if profile == 1 || profile == 3 {
        // subsampling_x, subsampling_y, reserved_zero; or only reserved_zero for RGB
        r.skip(if rgb { 1 } else { 3 })?;
    }
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    Some((width, height))
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte and frame count (RFC 6716,
/// 3.1 and 3.2); `None` for an empty packet or one longer than the 120 ms a packet may last.
pub(super) fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in units of 2.5 ms (120 samples).
    let units = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(packet.get(1)? & 0x3f),
    };
    let samples = units * 120 * frames;
    (1..=5760).contains(&samples).then_some(samples)
}

/// What an AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1) says about timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AacConfig {
    /// `audioObjectType`.
    pub(super) object_type: u32,
    /// Samples per second of the core decoder.
    pub(super) sample_rate: u32,
    /// `channelConfiguration` (0: given by a program config element).
    pub(super) channel_configuration: u32,
    /// Samples per frame: 1024, or 960 when `frameLengthFlag` says so.
    pub(super) frame_length: u32,
}

/// AudioSpecificConfig `samplingFrequencyIndex` values 0 to 12.
const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub(super) fn aac_config(config: &[u8]) -> Option<AacConfig> {
    let mut r = Bits::new(config);
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    let index = r.bits(4)?;
    let sample_rate = if index == 15 {
        r.bits(24)?
    } else {
        *AAC_SAMPLE_RATES.get(usize::try_from(index).ok()?)?
    };
    if sample_rate == 0 {
        return None;
    }
    let channel_configuration = r.bits(4)?;
    // GASpecificConfig starts with frameLengthFlag for the object types that have one (the
    // AAC family, ER AAC, TwinVQ, BSAC); SBR and PS (5, 29) wrap AAC and keep 1024 samples
    // per core frame, the flag then coming later, after the extension fields.
    let frame_length = match object_type {
        1 | 2 | 3 | 4 | 6 | 7 | 17 | 19 | 20 | 21 | 22 | 23 if r.bit() == Some(true) => 960,
        _ => 1024,
    };
    Some(AacConfig {
        object_type,
        sample_rate,
        channel_configuration,
        frame_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3; then se: 010 -> +1, 011 -> -1.
        let mut r = Bits::new(&[0b1010_0110, 0b0100_0100, 0b1100_0000]);
        assert_eq!(
            [r.ue(), r.ue(), r.ue(), r.ue()],
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!([r.se(), r.se()], [Some(1), Some(-1)]);
        // 32 zero bits before the marker: out of range, not an overflow.
        let mut r = Bits::new(&[0, 0, 0, 0, 0x80, 0, 0, 0, 0]);
        assert_eq!(r.ue(), None);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Parameter sets and headers below are what libx264, libx265, libaom and libvpx wrote
    // for one frame of ffmpeg's testsrc2 at each size.

    #[test]
    fn h264_sizes() {
        let cases = [
            (
                "6764000dacd94141fb0110000003001000000303c0f1429960",
                (320, 240),
            ),
            (
                "6764001eacd940a02ff970110000030001000003003c0f162d96",
                (640, 360),
            ),
            // 1088 lines coded, 8 cropped off.
            (
                "67640028acd940780227e5c044000003000400000300f03c60c658",
                (1920, 1080),
            ),
        ];
        for (sps, size) in cases {
            assert_eq!(h264_dimensions(&hex(sps)), Some(size), "{sps}");
        }
        // A PPS is not an SPS; a cut SPS has no size.
        assert_eq!(h264_dimensions(&hex("68ef8fcb")), None);
        assert_eq!(h264_dimensions(&hex("6764001eacd940a0")), None);
    }

    #[test]
    fn hevc_size() {
        let sps = "42010101600000030090000003000003005da00280802d165959a4932bc05a0200000300020000\
                   03003c10";
        assert_eq!(hevc_dimensions(&hex(sps)), Some((1280, 720)));
        assert_eq!(hevc_dimensions(&hex("4401c172b46240")), None);
    }

    #[test]
    fn av1_size() {
        // A temporal delimiter, then the sequence header OBU.
        let obus = hex("12000a0b00000004457e3e6d7c8020");
        assert_eq!(av1_dimensions(&obus), Some((352, 288)));
        assert_eq!(av1_dimensions(&obus[..obus.len() - 1]), None);
    }

    #[test]
    fn vp9_size() {
        let keyframe = hex("824983420018f012b60438241c184a000cc07fd9fa3c771f");
        assert_eq!(vp9_dimensions(&keyframe), Some((400, 300)));
        // An inter frame (frame_type 1) has no size.
        assert_eq!(vp9_dimensions(&hex("86")), None);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            [0, 0, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn av1_temporal_delimiters_are_dropped() {
        // A temporal delimiter (type 2, with a size field of 0), then a padding OBU.
        let unit = bytes::Bytes::from_static(&[0x12, 0x00, 0x7a, 0x01, 0xff]);
        assert_eq!(&without_temporal_delimiter(unit)[..], [0x7a, 0x01, 0xff]);
        let other = bytes::Bytes::from_static(&[0x7a, 0x01, 0xff]);
        assert_eq!(without_temporal_delimiter(other.clone()), other);
        assert!(without_temporal_delimiter(bytes::Bytes::new()).is_empty());
    }

    #[test]
    fn opus_durations() {
        // config 1 (SILK NB 20 ms), one frame; config 31 (CELT FB 20 ms), two frames; code 3
        // with three 2.5 ms frames; 3 x 60 ms is over 120 ms.
        assert_eq!(opus_packet_samples(&[1 << 3]), Some(960));
        assert_eq!(opus_packet_samples(&[31 << 3 | 1]), Some(1920));
        assert_eq!(opus_packet_samples(&[16 << 3 | 3, 3]), Some(360));
        assert_eq!(opus_packet_samples(&[3 << 3 | 3, 3]), None);
        assert_eq!(opus_packet_samples(&[]), None);
    }

    #[test]
    fn aac_configs() {
        // AAC LC, 44.1 kHz, stereo: 0x12 0x10.
        assert_eq!(
            aac_config(&[0x12, 0x10]),
            Some(AacConfig {
                object_type: 2,
                sample_rate: 44100,
                channel_configuration: 2,
                frame_length: 1024
            })
        );
        // AAC LC, 48 kHz, mono, 960-sample frames: 0x11 0x8c.
        assert_eq!(
            aac_config(&[0x11, 0x8c]).map(|c| (c.sample_rate, c.frame_length)),
            Some((48000, 960))
        );
        // An explicit rate (index 15) of 37800 Hz.
        let explicit = [0x17, 0x80, 0x49, 0xd4, 0x10];
        assert_eq!(aac_config(&explicit).map(|c| c.sample_rate), Some(37800));
        assert_eq!(aac_config(&[0x12]), None);
        assert_eq!(aac_config(&[0x16, 0x80]), None); // index 13 is reserved
    }
}
