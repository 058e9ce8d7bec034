//! Which caller-supplied text may become a claim or a client id: text that
//! reads as what it is. Characters that are invisible, reorder what follows
//! them or have no meaning yet (the "Trojan Source" class, CVE-2021-42574)
//! let `admin\u{202E}gnp.exe` display as `adminexe.png` in a verifier's log
//! or an operator's console, so they are refused wherever such text enters.
//!
//! The class: Unicode general categories Cc (controls), Cf (format: bidi
//! controls, zero-width characters, tags), Zl and Zp (line and paragraph
//! separators), Co (private use), Cn (unassigned and noncharacters) and Cs
//! (surrogates, which a Rust `str` cannot hold anyway), plus every
//! Default_Ignorable_Code_Point (UAX #44): the Hangul fillers, variation
//! selectors and the combining grapheme joiner are letters or marks by
//! category, yet render as nothing. Categories come from `unicode-properties`;
//! the default-ignorable ranges are the short table below.

use std::fmt;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A character that may not appear in caller-supplied text, and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HiddenChar {
    /// The character.
    pub ch: char,
    /// 1-based position, in characters.
    pub position: usize,
}

impl fmt::Display for HiddenChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "U+{:04X} at character {} is invisible, a control, or changes how the text around it \
             displays; remove it",
            u32::from(self.ch),
            self.position
        )
    }
}

/// The first character of `text` in the refused class, if any.
/// # Errors
///
/// The first hidden character, with its position.
pub fn check_visible(text: &str) -> Result<(), HiddenChar> {
    match text.chars().enumerate().find(|(_, ch)| is_hidden(*ch)) {
        None => Ok(()),
        Some((index, ch)) => Err(HiddenChar {
            ch,
            position: index + 1,
        }),
    }
}

/// Whether `ch` is in the refused class (see the module docs).
pub fn is_hidden(ch: char) -> bool {
    // ASCII, nearly all the text there is: only the controls (Cc) are hidden.
    if ch.is_ascii() {
        return ch.is_ascii_control();
    }
    matches!(
        ch.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    ) || is_default_ignorable(ch)
}

/// Default_Ignorable_Code_Point, from the Unicode Character Database's
/// DerivedCoreProperties.txt (stable since Unicode 6; most of these are also
/// Cf or Cn, the rest are the letters and marks that render as nothing).
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x061C, 0x061C),   // Arabic letter mark
    (0x115F, 0x1160),   // Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels
    (0x180B, 0x180F),   // Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),   // zero-width space, joiners, LRM, RLM
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFEFF, 0xFEFF),   // zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),   // halfwidth Hangul filler
    (0xFFF0, 0xFFF8),   // unassigned specials
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol formatting
    (0xE0000, 0xE0FFF), // tags and variation selectors supplement
];

fn is_default_ignorable(ch: char) -> bool {
    let code = u32::from(ch);
    DEFAULT_IGNORABLE
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&code))
}

/// `text` made safe for a log line: at most `max_chars` characters, with
/// every refused character (controls included) written as `\u{…}`, so a
/// caller-chosen value cannot forge or reorder the line around it.
pub fn for_log(text: &str, max_chars: usize) -> String {
    let mut shown = String::new();
    for (index, ch) in text.chars().enumerate() {
        if index == max_chars {
            shown.push('…');
            break;
        }
        if is_hidden(ch) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(ch)));
        } else {
            shown.push(ch);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_of_every_script_is_visible() {
        for text in [
            "alice",
            "José",
            "Zoë-Ann O'Brien",
            "日本語",
            "عربي",
            "עברית",
            "हिन्दी",
            "한국어",
            "👍",
            "billing-api",
            "https://api.example.com/v1",
            "a b",
        ] {
            assert_eq!(check_visible(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn the_whole_class_is_refused() {
        let mut refused: Vec<char> = Vec::new();
        // Cc: C0, DEL, C1.
        refused.extend(('\0'..='\u{1F}').chain('\u{7F}'..='\u{9F}'));
        // Cf: bidi controls and isolates, zero-width characters, marks, tags.
        refused.extend(['\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}']);
        refused.extend('\u{202A}'..='\u{202E}');
        refused.extend('\u{2066}'..='\u{2069}');
        refused.extend(['\u{2060}', '\u{2061}', '\u{2064}', '\u{FEFF}', '\u{061C}']);
        refused.extend(['\u{00AD}', '\u{FFF9}', '\u{FFFB}', '\u{110BD}', '\u{1D173}']);
        refused.extend('\u{E0000}'..='\u{E007F}');
        // Zl, Zp.
        refused.extend(['\u{2028}', '\u{2029}']);
        // Co: the BMP private use area and both supplementary planes.
        refused.extend(['\u{E000}', '\u{F8FF}', '\u{F0000}', '\u{10FFFD}']);
        // Cn: unassigned code points and noncharacters.
        refused.extend(['\u{0378}', '\u{FDD0}', '\u{FFFE}', '\u{FFFF}', '\u{10FFFF}']);
        // Default-ignorable letters and marks.
        refused.extend(['\u{034F}', '\u{115F}', '\u{1160}', '\u{17B4}', '\u{180B}']);
        refused.extend(['\u{3164}', '\u{FFA0}']);
        refused.extend('\u{FE00}'..='\u{FE0F}');
        refused.extend('\u{E0100}'..='\u{E01EF}');
        for ch in refused {
            let text = format!("ab{ch}c");
            assert_eq!(
                check_visible(&text),
                Err(HiddenChar { ch, position: 3 }),
                "U+{:04X}",
                u32::from(ch)
            );
        }
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_general_categories() {
        for ch in '\0'..='\u{7F}' {
            let by_category = matches!(ch.general_category(), GeneralCategory::Control);
            assert_eq!(is_hidden(ch), by_category, "U+{:04X}", u32::from(ch));
        }
    }

    #[test]
    fn the_error_names_the_code_point_and_where_it_is() {
        let err = check_visible("admin\u{202E}gnp.exe").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("U+202E at character 6 "), "{message}");
    }

    #[test]
    fn log_text_escapes_the_class_and_is_bounded() {
        assert_eq!(for_log("admin\u{202E}x\ny", 64), "admin\\u{202e}x\\u{a}y");
        assert_eq!(for_log("José", 64), "José");
        assert_eq!(for_log(&"x".repeat(100), 3), "xxx…");
    }
}
