//! Every transformation on arbitrary bytes: never panics.
#![no_main]

use gatehouse_security::actions::Transform;
use libfuzzer_sys::fuzz_target;

const ALL: &[&str] = &[
    "base64Decode", "base64DecodeExt", "base64Encode", "cmdLine", "compressWhitespace",
    "cssDecode", "escapeSeqDecode", "hexDecode", "hexEncode", "htmlEntityDecode", "jsDecode",
    "length", "lowercase", "md5", "normalizePath", "normalizePathWin", "parityEven7bit",
    "parityOdd7bit", "parityZero7bit", "removeComments", "removeCommentsChar", "removeNulls",
    "removeWhitespace", "replaceComments", "replaceNulls", "sha1", "sqlHexDecode", "trim",
    "trimLeft", "trimRight", "uppercase", "urlDecode", "urlDecodeUni", "urlEncode",
    "utf8toUnicode",
];

fuzz_target!(|data: &[u8]| {
    for name in ALL {
        if let Some(t) = Transform::parse(name) {
            let _ = gatehouse_security::transform::apply(t, data);
        }
    }
});
