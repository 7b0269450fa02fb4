//! What a window is: [`WindowSpec`], its validation, the arithmetic that assigns an event to its
//! windows, and its encoding in Arrow field metadata.
//!
//! Every length here is in nanoseconds. Windows are aligned to the Unix epoch (1970-01-01
//! 00:00:00 UTC): a window of slide `s` starts at a multiple of `s`. Months have no fixed
//! length, so they are refused; a day counts as exactly 86 400 seconds, because windows are
//! measured on the UTC timeline, not on a local calendar.

use std::collections::BTreeMap;
use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::metadata::FieldMetadata;
use datafusion::common::{ScalarValue, TableReference};

use crate::error::{EngineError, ErrorKind};

const NANOS_PER_MICRO: i64 = 1_000;
const NANOS_PER_MILLI: i64 = 1_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;
const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// The most windows one event may fall into (`size / slide` of a HOP). Each event becomes that
/// many rows, so the limit bounds how much a query can multiply its input.
pub const HOP_WINDOWS_PER_EVENT_MAX: i64 = 4096;

/// Metadata keys on the `window_start` / `window_end` fields of a windowed plan.
const KEY_ROLE: &str = "freshet.window.role";
const KEY_KIND: &str = "freshet.window.kind";
const KEY_TABLE: &str = "freshet.window.table";
const KEY_TIME_COLUMN: &str = "freshet.window.time_column";
const KEY_SIZE_NS: &str = "freshet.window.size_ns";
const KEY_SLIDE_NS: &str = "freshet.window.slide_ns";
const KEY_TIME_UNIT: &str = "freshet.window.time_unit";
const KEY_TIME_ZONE: &str = "freshet.window.time_zone";

/// Which window table function made a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows: each event is in exactly one.
    Tumble,
    /// Overlapping windows of `size`, one starting every `slide`: each event is in
    /// `size / slide` of them.
    Hop,
}

impl WindowKind {
    /// The SQL name, as used in messages (`TUMBLE`, `HOP`).
    pub fn sql_name(self) -> &'static str {
        match self {
            WindowKind::Tumble => "TUMBLE",
            WindowKind::Hop => "HOP",
        }
    }

    fn metadata_name(self) -> &'static str {
        match self {
            WindowKind::Tumble => "tumble",
            WindowKind::Hop => "hop",
        }
    }
}

/// Whether a column holds the start or the end of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowRole {
    /// `window_start`, inclusive.
    Start,
    /// `window_end`, exclusive: a window covers `[window_start, window_end)`.
    End,
}

impl WindowRole {
    fn metadata_name(self) -> &'static str {
        match self {
            WindowRole::Start => "start",
            WindowRole::End => "end",
        }
    }
}

/// A validated window definition: which table, which time column, how long, how often.
///
/// A HOP whose slide equals its size is a TUMBLE, and is represented as one. For a TUMBLE,
/// [`WindowSpec::slide_ns`] equals [`WindowSpec::size_ns`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    kind: WindowKind,
    table: TableReference,
    time_column: String,
    time_unit: TimeUnit,
    time_zone: Option<String>,
    size_ns: i64,
    slide_ns: i64,
}

impl WindowSpec {
    /// A TUMBLE of `size_ns` over `time_column` (of type `time_type`) of `table`.
    pub fn tumble(
        table: TableReference,
        time_column: &str,
        time_type: &DataType,
        size_ns: i64,
    ) -> Result<Self, EngineError> {
        Self::new(
            WindowKind::Tumble,
            table,
            time_column,
            time_type,
            size_ns,
            size_ns,
        )
    }

    /// A HOP of `size_ns` every `slide_ns`; a TUMBLE when the two are equal.
    pub fn hop(
        table: TableReference,
        time_column: &str,
        time_type: &DataType,
        slide_ns: i64,
        size_ns: i64,
    ) -> Result<Self, EngineError> {
        Self::new(
            WindowKind::Hop,
            table,
            time_column,
            time_type,
            size_ns,
            slide_ns,
        )
    }

    fn new(
        kind: WindowKind,
        table: TableReference,
        time_column: &str,
        time_type: &DataType,
        size_ns: i64,
        slide_ns: i64,
    ) -> Result<Self, EngineError> {
        let DataType::Timestamp(time_unit, time_zone) = time_type else {
            return Err(not_a_timestamp(kind, &table, time_column, time_type));
        };
        let mut spec = WindowSpec {
            kind,
            table,
            time_column: time_column.to_string(),
            time_unit: *time_unit,
            time_zone: time_zone.as_deref().map(str::to_string),
            size_ns,
            slide_ns,
        };
        spec.validate()?;
        // Planned as a TUMBLE: one window per event, no rows duplicated.
        if spec.slide_ns == spec.size_ns {
            spec.kind = WindowKind::Tumble;
        }
        Ok(spec)
    }

    fn validate(&self) -> Result<(), EngineError> {
        let function = self.kind.sql_name();
        let invalid = |message: String| EngineError::new(ErrorKind::InvalidParameterValue, message);
        for (what, nanos) in [("size", self.size_ns), ("slide", self.slide_ns)] {
            if nanos <= 0 {
                return Err(invalid(format!(
                    "{function} {what} must be positive, found {}",
                    format_interval(0, 0, nanos)
                )));
            }
            let unit_ns = unit_nanos(self.time_unit);
            if nanos % unit_ns != 0 {
                return Err(invalid(format!(
                    "{function} {what} {} is finer than column {} of type {}; use a whole number of {}",
                    format_interval(0, 0, nanos),
                    self.time_column,
                    self.time_type(),
                    unit_plural(self.time_unit)
                )));
            }
        }
        if self.size_ns % self.slide_ns != 0 {
            return Err(invalid(format!(
                "HOP size ({}) must be a multiple of slide ({})",
                format_interval(0, 0, self.size_ns),
                format_interval(0, 0, self.slide_ns)
            )));
        }
        if self.windows_per_event() > HOP_WINDOWS_PER_EVENT_MAX {
            return Err(invalid(format!(
                "HOP size ({}) / slide ({}) puts every event in {} windows, more than the limit of {HOP_WINDOWS_PER_EVENT_MAX}; use a longer slide",
                format_interval(0, 0, self.size_ns),
                format_interval(0, 0, self.slide_ns),
                self.windows_per_event()
            )));
        }
        Ok(())
    }

    /// TUMBLE or HOP (a HOP with slide = size is a TUMBLE).
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The windowed table as written in the call (`clicks`, `public.clicks`), not resolved
    /// against the session's default catalog and schema.
    pub fn table(&self) -> &TableReference {
        &self.table
    }

    /// The name of the time column in that table.
    pub fn time_column(&self) -> &str {
        &self.time_column
    }

    /// The type of the time column, which is also the type of `window_start` / `window_end`.
    pub fn time_type(&self) -> DataType {
        DataType::Timestamp(self.time_unit, self.time_zone.as_deref().map(Into::into))
    }

    /// Nanoseconds in one unit of the time column (1 for nanoseconds … 10⁹ for seconds).
    pub fn time_unit_ns(&self) -> i64 {
        unit_nanos(self.time_unit)
    }

    /// The length of a window, in nanoseconds.
    pub fn size_ns(&self) -> i64 {
        self.size_ns
    }

    /// The distance between the starts of consecutive windows, in nanoseconds (= size for a
    /// TUMBLE).
    pub fn slide_ns(&self) -> i64 {
        self.slide_ns
    }

    /// How many windows each event falls into: 1 for a TUMBLE, `size / slide` for a HOP.
    pub fn windows_per_event(&self) -> i64 {
        self.size_ns / self.slide_ns
    }

    /// The start of the latest window containing the instant `time_ns` (nanoseconds since the
    /// epoch): `time_ns` rounded down to a multiple of the slide. `None` if it is not
    /// representable in an `i64`.
    pub fn last_window_start_ns(&self, time_ns: i64) -> Option<i64> {
        // div_euclid rounds towards negative infinity for a positive divisor, so instants
        // before 1970 land in the window that contains them, not the one after.
        let start = i128::from(time_ns.div_euclid(self.slide_ns)) * i128::from(self.slide_ns);
        i64::try_from(start).ok()
    }

    /// Every window `[start, end)` containing the instant `time_ns`, in nanoseconds since the
    /// epoch, earliest first. Windows whose bounds do not fit in an `i64` are left out.
    pub fn windows_containing_ns(&self, time_ns: i64) -> Vec<(i64, i64)> {
        let last = i128::from(time_ns.div_euclid(self.slide_ns)) * i128::from(self.slide_ns);
        let count = i128::from(self.windows_per_event());
        (0..count)
            .rev()
            .map(|back| last - back * i128::from(self.slide_ns))
            .filter_map(|start| {
                let end = start + i128::from(self.size_ns);
                Some((i64::try_from(start).ok()?, i64::try_from(end).ok()?))
            })
            .collect()
    }

    /// The metadata that marks a `window_start` or `window_end` field of this window.
    pub(crate) fn field_metadata(&self, role: WindowRole) -> FieldMetadata {
        let mut metadata = BTreeMap::from([
            (KEY_ROLE.to_string(), role.metadata_name().to_string()),
            (KEY_KIND.to_string(), self.kind.metadata_name().to_string()),
            (KEY_TABLE.to_string(), self.table.to_quoted_string()),
            (KEY_TIME_COLUMN.to_string(), self.time_column.clone()),
            (
                KEY_TIME_UNIT.to_string(),
                unit_name(self.time_unit).to_string(),
            ),
            (KEY_SIZE_NS.to_string(), self.size_ns.to_string()),
            (KEY_SLIDE_NS.to_string(), self.slide_ns.to_string()),
        ]);
        if let Some(zone) = &self.time_zone {
            metadata.insert(KEY_TIME_ZONE.to_string(), zone.clone());
        }
        FieldMetadata::from(metadata)
    }

    /// Reads back what [`WindowSpec::field_metadata`] wrote; `None` if the metadata does not
    /// describe a window (or was tampered with).
    pub(crate) fn from_metadata(
        metadata: &HashMap<String, String>,
    ) -> Option<(WindowRole, WindowSpec)> {
        let role = match metadata.get(KEY_ROLE)?.as_str() {
            "start" => WindowRole::Start,
            "end" => WindowRole::End,
            _ => return None,
        };
        let kind = match metadata.get(KEY_KIND)?.as_str() {
            "tumble" => WindowKind::Tumble,
            "hop" => WindowKind::Hop,
            _ => return None,
        };
        let unit = [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Microsecond,
            TimeUnit::Nanosecond,
        ]
        .into_iter()
        .find(|unit| Some(unit_name(*unit)) == metadata.get(KEY_TIME_UNIT).map(String::as_str))?;
        let time_type =
            DataType::Timestamp(unit, metadata.get(KEY_TIME_ZONE).map(|z| z.as_str().into()));
        let table = TableReference::from(metadata.get(KEY_TABLE)?.as_str());
        let time_column = metadata.get(KEY_TIME_COLUMN)?;
        let size_ns = metadata.get(KEY_SIZE_NS)?.parse().ok()?;
        let slide_ns = metadata.get(KEY_SLIDE_NS)?.parse().ok()?;
        let spec = WindowSpec::new(kind, table, time_column, &time_type, size_ns, slide_ns).ok()?;
        Some((role, spec))
    }
}

/// A column that holds window bounds, recognised from its field metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowColumn {
    /// Start or end.
    pub role: WindowRole,
    /// The window the column bounds.
    pub spec: WindowSpec,
}

/// Recognises a `window_start` / `window_end` column produced by TUMBLE or HOP, under any name
/// it was later given, from the metadata the window plan puts on the field. DataFusion carries
/// field metadata through column references, aliases and GROUP BY keys, so the fields of an
/// aggregate's output tell which group keys are windows.
pub fn window_column(field: &Field) -> Option<WindowColumn> {
    WindowSpec::from_metadata(field.metadata()).map(|(role, spec)| WindowColumn { role, spec })
}

/// Converts an interval argument (`INTERVAL '1 minute'`, `INTERVAL '1' MINUTE`) to
/// nanoseconds. `function` and `what` name it in errors (`TUMBLE`, `size`).
pub(crate) fn interval_nanos(
    function: &str,
    what: &str,
    value: &ScalarValue,
) -> Result<i64, EngineError> {
    let invalid = |message: String| EngineError::new(ErrorKind::InvalidParameterValue, message);
    let (months, days, nanos) = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => (v.months, v.days, v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => {
            (0, v.days, i64::from(v.milliseconds) * NANOS_PER_MILLI)
        }
        ScalarValue::IntervalYearMonth(Some(months)) => (*months, 0, 0),
        ScalarValue::DurationSecond(Some(v)) => (0, 0, scale(*v, NANOS_PER_SECOND)),
        ScalarValue::DurationMillisecond(Some(v)) => (0, 0, scale(*v, NANOS_PER_MILLI)),
        ScalarValue::DurationMicrosecond(Some(v)) => (0, 0, scale(*v, NANOS_PER_MICRO)),
        ScalarValue::DurationNanosecond(Some(v)) => (0, 0, *v),
        other => {
            return Err(invalid(format!(
                "{function} {what} must be an interval such as INTERVAL '1 minute', found {}",
                describe_value(other)
            )))
        }
    };
    if months != 0 {
        return Err(invalid(format!(
            "{function} {what} {} has a variable length; use days, hours, minutes or seconds",
            format_interval(months, days, nanos)
        )));
    }
    i64::from(days)
        .checked_mul(NANOS_PER_DAY)
        .and_then(|d| d.checked_add(nanos))
        .ok_or_else(|| {
            invalid(format!(
                "{function} {what} {} is too long",
                format_interval(months, days, nanos)
            ))
        })
}

/// Saturates instead of overflowing; a saturated length is refused later as too long or
/// not a multiple, never silently wrapped.
fn scale(value: i64, factor: i64) -> i64 {
    value.saturating_mul(factor)
}

fn describe_value(value: &ScalarValue) -> String {
    if value.is_null() {
        "NULL".to_string()
    } else {
        format!("{value} ({})", value.data_type())
    }
}

/// Renders an interval the way a user would write it: `INTERVAL '1 hour 30 minutes'`.
pub(crate) fn format_interval(months: i32, days: i32, nanos: i64) -> String {
    let mut parts = Vec::new();
    push_part(&mut parts, i128::from(months), "month");
    push_part(&mut parts, i128::from(days), "day");
    let sign: i128 = if nanos < 0 { -1 } else { 1 };
    // i128 so that i64::MIN has an absolute value.
    let mut rest = i128::from(nanos).abs();
    for (unit_ns, unit) in [
        (NANOS_PER_DAY, "day"),
        (NANOS_PER_HOUR, "hour"),
        (NANOS_PER_MINUTE, "minute"),
        (NANOS_PER_SECOND, "second"),
        (NANOS_PER_MILLI, "millisecond"),
        (NANOS_PER_MICRO, "microsecond"),
        (1, "nanosecond"),
    ] {
        let count = rest / i128::from(unit_ns);
        rest %= i128::from(unit_ns);
        push_part(&mut parts, sign * count, unit);
    }
    if parts.is_empty() {
        parts.push("0 seconds".to_string());
    }
    format!("INTERVAL '{}'", parts.join(" "))
}

fn push_part(parts: &mut Vec<String>, count: i128, unit: &str) {
    match count {
        0 => {}
        1 | -1 => parts.push(format!("{count} {unit}")),
        _ => parts.push(format!("{count} {unit}s")),
    }
}

fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => NANOS_PER_SECOND,
        TimeUnit::Millisecond => NANOS_PER_MILLI,
        TimeUnit::Microsecond => NANOS_PER_MICRO,
        TimeUnit::Nanosecond => 1,
    }
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

fn unit_plural(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "seconds",
        TimeUnit::Millisecond => "milliseconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
    }
}

/// The error for a time column that is not a timestamp.
pub(crate) fn not_a_timestamp(
    kind: WindowKind,
    table: &TableReference,
    time_column: &str,
    found: &DataType,
) -> EngineError {
    let hint = match found {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            "; declare it TIMESTAMP in CREATE EXTERNAL TABLE, or cast it in a view"
        }
        _ => "",
    };
    EngineError::new(
        ErrorKind::InvalidStatement,
        format!(
            "{} time column '{time_column}' of table '{table}' must be a timestamp, found {found}{hint}",
            kind.sql_name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    const MINUTE: i64 = NANOS_PER_MINUTE;
    const SECOND: i64 = NANOS_PER_SECOND;

    fn ts_ns() -> DataType {
        DataType::Timestamp(TimeUnit::Nanosecond, None)
    }

    fn hop(slide: i64, size: i64) -> Result<WindowSpec, EngineError> {
        WindowSpec::hop(TableReference::bare("clicks"), "ts", &ts_ns(), slide, size)
    }

    fn tumble(size: i64) -> WindowSpec {
        WindowSpec::tumble(TableReference::bare("clicks"), "ts", &ts_ns(), size).unwrap()
    }

    fn mdn(months: i32, days: i32, nanos: i64) -> ScalarValue {
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(months, days, nanos)))
    }

    #[test]
    fn hop_size_not_a_multiple_of_slide_names_both_intervals() {
        let err = hop(2 * MINUTE, 5 * MINUTE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParameterValue);
        assert_eq!(
            err.message(),
            "HOP size (INTERVAL '5 minutes') must be a multiple of slide (INTERVAL '2 minutes')"
        );
        // A size shorter than the slide is not a positive multiple either.
        assert!(hop(2 * MINUTE, MINUTE)
            .unwrap_err()
            .message()
            .contains("must be a multiple of slide"));
    }

    #[test]
    fn hop_with_slide_equal_to_size_is_a_tumble() {
        let spec = hop(MINUTE, MINUTE).unwrap();
        assert_eq!(spec.kind(), WindowKind::Tumble);
        assert_eq!(spec.windows_per_event(), 1);
        assert_eq!(hop(MINUTE, 5 * MINUTE).unwrap().kind(), WindowKind::Hop);
    }

    #[test]
    fn zero_and_negative_lengths_are_refused() {
        let err = WindowSpec::tumble(TableReference::bare("t"), "ts", &ts_ns(), 0).unwrap_err();
        assert_eq!(
            err.message(),
            "TUMBLE size must be positive, found INTERVAL '0 seconds'"
        );
        let err = hop(-MINUTE, MINUTE).unwrap_err();
        assert_eq!(
            err.message(),
            "HOP slide must be positive, found INTERVAL '-1 minute'"
        );
    }

    #[test]
    fn sub_second_windows_on_a_seconds_column_are_refused() {
        let seconds = DataType::Timestamp(TimeUnit::Second, None);
        let err =
            WindowSpec::tumble(TableReference::bare("t"), "ts", &seconds, SECOND / 2).unwrap_err();
        assert!(
            err.message().contains("use a whole number of seconds"),
            "{}",
            err.message()
        );
        assert!(WindowSpec::tumble(TableReference::bare("t"), "ts", &seconds, 90 * SECOND).is_ok());
    }

    #[test]
    fn too_many_windows_per_event_is_refused() {
        assert!(hop(SECOND, HOP_WINDOWS_PER_EVENT_MAX * SECOND).is_ok());
        let err = hop(SECOND, (HOP_WINDOWS_PER_EVENT_MAX + 1) * SECOND).unwrap_err();
        assert!(err.message().contains("4097 windows"), "{}", err.message());
    }

    #[test]
    fn non_timestamp_time_type_is_refused_with_its_name() {
        let err = WindowSpec::tumble(
            TableReference::bare("events"),
            "action",
            &DataType::Utf8,
            MINUTE,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidStatement);
        assert!(err.message().starts_with(
            "TUMBLE time column 'action' of table 'events' must be a timestamp, found Utf8"
        ));
    }

    #[test]
    fn intervals_convert_to_nanoseconds() {
        assert_eq!(
            interval_nanos("TUMBLE", "size", &mdn(0, 0, MINUTE)).unwrap(),
            MINUTE
        );
        assert_eq!(
            interval_nanos("TUMBLE", "size", &mdn(0, 1, SECOND)).unwrap(),
            NANOS_PER_DAY + SECOND
        );
        let day_time = ScalarValue::IntervalDayTime(Some(
            datafusion::arrow::datatypes::IntervalDayTime::new(0, 1500),
        ));
        assert_eq!(
            interval_nanos("HOP", "slide", &day_time).unwrap(),
            1_500_000_000
        );
        assert_eq!(
            interval_nanos("HOP", "slide", &ScalarValue::DurationSecond(Some(3))).unwrap(),
            3 * SECOND
        );
    }

    #[test]
    fn month_intervals_and_non_intervals_are_refused() {
        let err = interval_nanos("TUMBLE", "size", &mdn(1, 0, 0)).unwrap_err();
        assert_eq!(
            err.message(),
            "TUMBLE size INTERVAL '1 month' has a variable length; use days, hours, minutes or seconds"
        );
        let err = interval_nanos("TUMBLE", "size", &ScalarValue::IntervalYearMonth(Some(14)))
            .unwrap_err();
        assert!(err.message().contains("INTERVAL '14 months'"));
        let err = interval_nanos("HOP", "slide", &ScalarValue::Int64(Some(5))).unwrap_err();
        assert_eq!(
            err.message(),
            "HOP slide must be an interval such as INTERVAL '1 minute', found 5 (Int64)"
        );
        let err = interval_nanos("HOP", "slide", &ScalarValue::Int64(None)).unwrap_err();
        assert!(err.message().ends_with("found NULL"));
    }

    #[test]
    fn intervals_render_as_users_write_them() {
        assert_eq!(
            format_interval(0, 0, 90 * MINUTE),
            "INTERVAL '1 hour 30 minutes'"
        );
        assert_eq!(
            format_interval(0, 0, 1_500_000_000),
            "INTERVAL '1 second 500 milliseconds'"
        );
        assert_eq!(format_interval(0, 2, 0), "INTERVAL '2 days'");
        assert!(format_interval(0, 0, i64::MIN).starts_with("INTERVAL '-106751 days"));
    }

    #[test]
    fn tumble_assigns_each_instant_to_the_epoch_aligned_window_containing_it() {
        let spec = tumble(MINUTE);
        // 10:00:05 on 2026-11-01 is 1_793_527_205 s after the epoch; its minute starts 5 s
        // earlier. (2026-11-01 = day 20_758 since 1970-01-01: 20_758 * 86_400 = 1_793_491_200;
        // plus 10 h = 36_000 s gives 1_793_527_200.)
        let t = 1_793_527_205 * SECOND;
        assert_eq!(
            spec.windows_containing_ns(t),
            vec![(1_793_527_200 * SECOND, 1_793_527_260 * SECOND)]
        );
        // A window is half-open: an event exactly at a boundary starts the next window.
        assert_eq!(
            spec.windows_containing_ns(60 * SECOND),
            vec![(60 * SECOND, 120 * SECOND)]
        );
        assert_eq!(spec.windows_containing_ns(0), vec![(0, 60 * SECOND)]);
    }

    #[test]
    fn instants_before_1970_round_down_not_towards_zero() {
        let spec = tumble(MINUTE);
        // 1969-12-31 23:59:59 is in [23:59:00, 00:00:00), not in [00:00:00, 00:01:00).
        assert_eq!(spec.windows_containing_ns(-SECOND), vec![(-60 * SECOND, 0)]);
        assert_eq!(spec.last_window_start_ns(-60 * SECOND), Some(-60 * SECOND));
        assert_eq!(spec.last_window_start_ns(-61 * SECOND), Some(-120 * SECOND));
        assert_eq!(spec.last_window_start_ns(-1), Some(-60 * SECOND));
    }

    #[test]
    fn hop_puts_each_event_in_size_over_slide_windows() {
        // Size 3 minutes every minute: 00:02:30 is in the windows starting 00:00, 00:01, 00:02.
        let spec = hop(MINUTE, 3 * MINUTE).unwrap();
        assert_eq!(spec.windows_per_event(), 3);
        assert_eq!(
            spec.windows_containing_ns(150 * SECOND),
            vec![
                (0, 180 * SECOND),
                (60 * SECOND, 240 * SECOND),
                (120 * SECOND, 300 * SECOND)
            ]
        );
        // Before the epoch too: -00:00:30 is in the windows starting -3, -2 and -1 minutes.
        assert_eq!(
            spec.windows_containing_ns(-30 * SECOND),
            vec![
                (-180 * SECOND, 0),
                (-120 * SECOND, 60 * SECOND),
                (-60 * SECOND, 120 * SECOND)
            ]
        );
        for t in [-7 * SECOND, 0, 59 * SECOND, 1_793_527_205 * SECOND] {
            for (start, end) in spec.windows_containing_ns(t) {
                assert!(start <= t && t < end, "{t} not in [{start}, {end})");
            }
        }
    }

    #[test]
    fn windows_near_the_ends_of_time_do_not_overflow() {
        let spec = hop(MINUTE, 3 * MINUTE).unwrap();
        let last = spec.windows_containing_ns(i64::MAX);
        assert!(last.len() < 3, "windows ending after i64::MAX are dropped");
        assert!(spec.last_window_start_ns(i64::MIN).is_none());
    }

    #[test]
    fn metadata_round_trips_the_spec() {
        let spec = WindowSpec::hop(
            TableReference::partial("Sales", "clicks"),
            "ts",
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            MINUTE,
            5 * MINUTE,
        )
        .unwrap();
        let field = spec
            .field_metadata(WindowRole::End)
            .add_to_field(Field::new("we", spec.time_type(), true));
        let column = window_column(&field).unwrap();
        assert_eq!(column.role, WindowRole::End);
        assert_eq!(column.spec, spec);
        assert!(window_column(&Field::new("ts", ts_ns(), true)).is_none());
    }
}
