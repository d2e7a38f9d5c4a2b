//! The MC146818 CMOS real-time clock: read once at boot to give the wall clock its epoch.

use x86_64::instructions::port::Port;

fn read(reg: u8) -> u8 {
    // SAFETY: selecting a CMOS register (NMI stays enabled, bit 7 clear) and reading it has no
    // effect on memory; interrupts are off at boot, so the select/read pair is not split.
    unsafe {
        Port::<u8>::new(0x70).write(reg);
        Port::<u8>::new(0x71).read()
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch, or `None` when no RTC answers or it reads nonsense.
pub fn unix_time() -> Option<u64> {
    if read(0x0b) == 0xff {
        return None;
    }
    // Wait out an update in progress, then read until two reads agree.
    let snapshot = || {
        while read(0x0a) & 0x80 != 0 {
            core::hint::spin_loop();
        }
        [read(0x00), read(0x02), read(0x04), read(0x07), read(0x08), read(0x09), read(0x32)]
    };
    let mut t = snapshot();
    loop {
        let again = snapshot();
        if again == t {
            break;
        }
        t = again;
    }
    let status_b = read(0x0b);
    let bcd = |v: u8| if status_b & 0x04 == 0 { (v & 0x0f) + (v >> 4) * 10 } else { v };
    let hour_raw = t[2];
    let mut hour = u32::from(bcd(hour_raw & 0x7f));
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let (sec, min, day, month, year) =
        (u32::from(bcd(t[0])), u32::from(bcd(t[1])), u32::from(bcd(t[3])), u32::from(bcd(t[4])), u32::from(bcd(t[5])));
    let century = match bcd(t[6]) {
        c @ 19..=21 => u32::from(c),
        _ => 20,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(century * 100 + year), month, day);
    u64::try_from(days * 86_400 + i64::from(hour * 3600 + min * 60 + sec)).ok()
}
