//! Rule targets: `ARGS|!ARGS:foo|&TX:score|REQUEST_COOKIES:/^sess/|XML:/*`. Each names
//! a collection, optionally one key of it (a name, or a regex between slashes), and may
//! be a count (`&`) or an exclusion (`!`) of the targets before it.

use crate::error::Bad;

macro_rules! collections {
    ($($name:ident => $text:literal),* $(,)?) => {
        /// The variables and collections SecLang rules may inspect.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum Collection { $($name),* }

        impl Collection {
            pub fn parse(s: &str) -> Option<Collection> {
                let upper = s.to_ascii_uppercase();
                Some(match upper.as_str() { $($text => Collection::$name,)* _ => return None })
            }

            pub fn name(self) -> &'static str {
                match self { $(Collection::$name => $text),* }
            }
        }
    };
}

collections! {
    Args => "ARGS",
    ArgsGet => "ARGS_GET",
    ArgsPost => "ARGS_POST",
    ArgsNames => "ARGS_NAMES",
    ArgsGetNames => "ARGS_GET_NAMES",
    ArgsPostNames => "ARGS_POST_NAMES",
    ArgsCombinedSize => "ARGS_COMBINED_SIZE",
    AuthType => "AUTH_TYPE",
    Duration => "DURATION",
    Env => "ENV",
    Files => "FILES",
    FilesCombinedSize => "FILES_COMBINED_SIZE",
    FilesNames => "FILES_NAMES",
    FilesSizes => "FILES_SIZES",
    FilesTmpNames => "FILES_TMPNAMES",
    FullRequest => "FULL_REQUEST",
    FullRequestLength => "FULL_REQUEST_LENGTH",
    Geo => "GEO",
    Global => "GLOBAL",
    HighestSeverity => "HIGHEST_SEVERITY",
    InboundDataError => "INBOUND_DATA_ERROR",
    Ip => "IP",
    MatchedVar => "MATCHED_VAR",
    MatchedVarName => "MATCHED_VAR_NAME",
    MatchedVars => "MATCHED_VARS",
    MatchedVarsNames => "MATCHED_VARS_NAMES",
    MultipartBoundaryQuoted => "MULTIPART_BOUNDARY_QUOTED",
    MultipartBoundaryWhitespace => "MULTIPART_BOUNDARY_WHITESPACE",
    MultipartCrlfLfLines => "MULTIPART_CRLF_LF_LINES",
    MultipartDataAfter => "MULTIPART_DATA_AFTER",
    MultipartDataBefore => "MULTIPART_DATA_BEFORE",
    MultipartFileLimitExceeded => "MULTIPART_FILE_LIMIT_EXCEEDED",
    MultipartFilename => "MULTIPART_FILENAME",
    MultipartHeaderFolding => "MULTIPART_HEADER_FOLDING",
    MultipartInvalidHeaderFolding => "MULTIPART_INVALID_HEADER_FOLDING",
    MultipartInvalidPart => "MULTIPART_INVALID_PART",
    MultipartInvalidQuoting => "MULTIPART_INVALID_QUOTING",
    MultipartLfLine => "MULTIPART_LF_LINE",
    MultipartMissingSemicolon => "MULTIPART_MISSING_SEMICOLON",
    MultipartName => "MULTIPART_NAME",
    MultipartPartHeaders => "MULTIPART_PART_HEADERS",
    MultipartStrictError => "MULTIPART_STRICT_ERROR",
    MultipartUnmatchedBoundary => "MULTIPART_UNMATCHED_BOUNDARY",
    OutboundDataError => "OUTBOUND_DATA_ERROR",
    PathInfo => "PATH_INFO",
    QueryString => "QUERY_STRING",
    RemoteAddr => "REMOTE_ADDR",
    RemoteHost => "REMOTE_HOST",
    RemotePort => "REMOTE_PORT",
    RemoteUser => "REMOTE_USER",
    ReqbodyError => "REQBODY_ERROR",
    ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
    ReqbodyProcessor => "REQBODY_PROCESSOR",
    ReqbodyProcessorError => "REQBODY_PROCESSOR_ERROR",
    RequestBasename => "REQUEST_BASENAME",
    RequestBody => "REQUEST_BODY",
    RequestBodyLength => "REQUEST_BODY_LENGTH",
    RequestCookies => "REQUEST_COOKIES",
    RequestCookiesNames => "REQUEST_COOKIES_NAMES",
    RequestFilename => "REQUEST_FILENAME",
    RequestHeaders => "REQUEST_HEADERS",
    RequestHeadersNames => "REQUEST_HEADERS_NAMES",
    RequestLine => "REQUEST_LINE",
    RequestMethod => "REQUEST_METHOD",
    RequestProtocol => "REQUEST_PROTOCOL",
    RequestUri => "REQUEST_URI",
    RequestUriRaw => "REQUEST_URI_RAW",
    ResponseBody => "RESPONSE_BODY",
    ResponseContentLength => "RESPONSE_CONTENT_LENGTH",
    ResponseContentType => "RESPONSE_CONTENT_TYPE",
    ResponseHeaders => "RESPONSE_HEADERS",
    ResponseHeadersNames => "RESPONSE_HEADERS_NAMES",
    ResponseProtocol => "RESPONSE_PROTOCOL",
    ResponseStatus => "RESPONSE_STATUS",
    Rule => "RULE",
    ServerAddr => "SERVER_ADDR",
    ServerName => "SERVER_NAME",
    ServerPort => "SERVER_PORT",
    Session => "SESSION",
    SessionId => "SESSIONID",
    StatusLine => "STATUS_LINE",
    Time => "TIME",
    TimeDay => "TIME_DAY",
    TimeEpoch => "TIME_EPOCH",
    TimeHour => "TIME_HOUR",
    TimeMin => "TIME_MIN",
    TimeMon => "TIME_MON",
    TimeSec => "TIME_SEC",
    TimeWday => "TIME_WDAY",
    TimeYear => "TIME_YEAR",
    Tx => "TX",
    UniqueId => "UNIQUE_ID",
    UrlencodedError => "URLENCODED_ERROR",
    User => "USER",
    UserId => "USERID",
    WebappId => "WEBAPP_ID",
    Xml => "XML",
}

/// Which members of a collection a target means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// All of them.
    All,
    /// The one with this name (compared case-insensitively, as ModSecurity does).
    Key(String),
    /// Those whose names match this regex (written between slashes).
    Regex(String),
}

/// One rule target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub collection: Collection,
    pub selector: Selector,
    /// `&`: the number of members, not their values.
    pub count: bool,
    /// `!`: removes the members it names from the targets before it.
    pub exclude: bool,
}

/// Parses a `|`-separated target list.
pub fn parse(s: &str) -> Result<Vec<Variable>, Bad> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (mut count, mut exclude) = (false, false);
        match bytes[i] {
            b'&' => {
                count = true;
                i += 1;
            }
            b'!' => {
                exclude = true;
                i += 1;
            }
            _ => {}
        }
        let name_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let name = &s[name_start..i];
        let collection =
            Collection::parse(name).ok_or_else(|| Bad::new(name, "unknown variable"))?;
        let mut selector = Selector::All;
        if i < bytes.len() && bytes[i] == b':' {
            i += 1;
            let (sel, next) = match collection {
                // XPath, not a regex: it runs to the next `|`.
                Collection::Xml => {
                    let end = s[i..].find('|').map_or(s.len(), |k| i + k);
                    (Selector::Key(s[i..end].to_string()), end)
                }
                _ => selector_at(s, i)?,
            };
            selector = sel;
            i = next;
        }
        if exclude && selector == Selector::All {
            return Err(Bad::new(
                &s[name_start - 1..i],
                "an exclusion must name a key",
            ));
        }
        out.push(Variable {
            collection,
            selector,
            count,
            exclude,
        });
        if i < bytes.len() {
            if bytes[i] != b'|' {
                return Err(Bad::new(&s[name_start..], "expected `|` between variables"));
            }
            i += 1;
            if i == bytes.len() {
                return Err(Bad::new(s, "empty variable after `|`"));
            }
        }
    }
    if out.is_empty() {
        return Err(Bad::new(s, "no variables"));
    }
    Ok(out)
}

/// A selector starting at byte `i` of `s`, and the index after it.
fn selector_at(s: &str, i: usize) -> Result<(Selector, usize), Bad> {
    let bytes = s.as_bytes();
    match bytes.get(i) {
        Some(b'/') => {
            // A regex, to the next unescaped slash.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'/' {
                if bytes[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            if j >= bytes.len() {
                return Err(Bad::new(&s[i..], "unterminated /regex/ selector"));
            }
            Ok((Selector::Regex(s[i + 1..j].to_string()), j + 1))
        }
        Some(b'\'') => {
            let end = s[i + 1..]
                .find('\'')
                .map(|k| i + 1 + k)
                .ok_or_else(|| Bad::new(&s[i..], "unterminated quoted selector"))?;
            Ok((Selector::Key(s[i + 1..end].to_string()), end + 1))
        }
        _ => {
            let end = s[i..].find('|').map_or(s.len(), |k| i + k);
            if end == i {
                return Err(Bad::new(s, "empty selector after `:`"));
            }
            Ok((Selector::Key(s[i..end].to_string()), end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_crs_uses() {
        let v = parse("REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|&TX:score|ARGS:'a|b'|XML:/*|TX:/^(?:x|y)$/|XML://@*")
            .expect("parses");
        assert_eq!(v.len(), 7);
        assert_eq!(v[6].selector, Selector::Key("//@*".into()));
        assert_eq!(v[1].selector, Selector::Regex("__utm".into()));
        assert!(v[1].exclude);
        assert!(v[2].count);
        assert_eq!(v[3].selector, Selector::Key("a|b".into()));
        assert_eq!(v[4].selector, Selector::Key("/*".into()));
        assert_eq!(v[5].selector, Selector::Regex("^(?:x|y)$".into()));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse("ARGZ").expect_err("bad").token, "ARGZ");
        assert!(parse("ARGS|").is_err());
        assert!(parse("!ARGS").is_err());
        assert!(parse("TX:/open").is_err());
    }
}
