//! Every built-in rule: positive fixtures and near misses, each written in every event
//! shape of ARCHITECTURE §4 (and, for process creation, as Sysmon 1 and Security 4688).

use iis_tagger::{Config, RuleSet, Tagger};

use crate::support::{Kind, SYSMON, assert_contract, builtin_tagger, detections, records};

const ADD: &str = "windows_iis_components_add_new_module";
const NEW: &str = "windows_iis_components_new_module_added";
const DUMP: &str = "microsoft_iis_service_account_password_dumped";
const SHELL: &str = "webshell_child_process";
const DISC: &str = "webshell_child_discovery";
const FILE: &str = "suspicious_web_file_written";
const REG: &str = "iis_module_registered";
const MSI: &str = "windows_msiexec_spawn_discovery_command";

const IIS: &str = "Microsoft-IIS-Configuration/Operational";
const APPCMD: &str = r"C:\Windows\System32\inetsrv\appcmd.exe";
const W3WP: &str = r"C:\Windows\System32\inetsrv\w3wp.exe";
const S32: &str = r"C:\Windows\System32\";

struct Fixture {
    name: &'static str,
    kind: Kind,
    fields: Vec<(&'static str, String)>,
    /// Expected slugs on the Sysmon / other-channel records.
    expect: &'static [&'static str],
    /// Expected slugs on the Security 4688 records, when they differ.
    expect_4688: Option<&'static [&'static str]>,
}

fn fx(name: &'static str, kind: Kind, fields: &[(&'static str, &str)], expect: &'static [&'static str]) -> Fixture {
    Fixture { name, kind, fields: fields.iter().map(|&(k, v)| (k, v.to_string())).collect(), expect, expect_4688: None }
}

fn proc(name: &'static str, image: &str, parent: &str, cmd: &str, expect: &'static [&'static str]) -> Fixture {
    fx(name, Kind::Process, &[("Image", image), ("ParentImage", parent), ("CommandLine", cmd)], expect)
}

fn s32(exe: &str) -> String {
    format!("{S32}{exe}")
}

fn fixtures() -> Vec<Fixture> {
    let mut f = vec![
        // windows_iis_components_add_new_module
        proc(
            "module install",
            APPCMD,
            &s32("cmd.exe"),
            r"appcmd install module /name:RGDoor /image:C:\Windows\Temp\rgdoor.dll",
            &[ADD],
        ),
        proc(
            "upper case",
            r"C:\WINDOWS\SYSTEM32\INETSRV\APPCMD.EXE",
            &s32(r"WindowsPowerShell\v1.0\POWERSHELL.EXE"),
            r"APPCMD.EXE INSTALL MODULE /NAME:IISRaid /IMAGE:C:\inetpub\temp\iisraid.dll",
            &[ADD],
        ),
        proc("add module", APPCMD, W3WP, r"appcmd.exe add module /name:OwlProxy /image:C:\ProgramData\owl.dll", &[ADD]),
        proc(
            "forward slashes",
            "C:/Windows/System32/inetsrv/appcmd.exe",
            &s32("cmd.exe"),
            "appcmd install module /image:x.dll",
            &[ADD],
        ),
        proc("bare image name", "appcmd.exe", &s32("cmd.exe"), "appcmd install module /image:x.dll", &[ADD]),
        fx(
            "no parent at all",
            Kind::Process,
            &[("Image", APPCMD), ("CommandLine", "appcmd install module /image:x.dll")],
            &[ADD],
        ),
        proc(
            "parent msiexec",
            APPCMD,
            &s32("msiexec.exe"),
            r"appcmd install module /name:UrlRewrite /image:%windir%\rewrite.dll",
            &[],
        ),
        proc(
            "parent iissetup",
            APPCMD,
            &s32(r"inetsrv\IISSETUP.EXE"),
            "appcmd install module /name:U /image:u.dll",
            &[],
        ),
        proc("module without image", APPCMD, &s32("cmd.exe"), "appcmd install module /name:UrlRewrite", &[]),
        proc(
            "not appcmd",
            &s32(r"WindowsPowerShell\v1.0\powershell.exe"),
            &s32("cmd.exe"),
            r"powershell New-WebGlobalModule -Name X -Image C:\x.dll # install module",
            &[],
        ),
        proc("appcmd-like name", r"C:\Tools\xappcmd.exe", &s32("cmd.exe"), "xappcmd install module /image:x", &[]),
        proc(
            "both appcmd rules",
            APPCMD,
            &s32("cmd.exe"),
            "appcmd install module /image:x.dll list /text:name",
            &[ADD, DUMP],
        ),
        // windows_iis_components_new_module_added
        fx(
            "iis event 29",
            Kind::Raw(29, IIS),
            &[("Configuration", "/system.webServer/globalModules/add[@name=\"X\"]/@image"), ("NewValue", r"C:\x.dll")],
            &[NEW],
        ),
        fx(
            "iis channel in lower case",
            Kind::Raw(29, "microsoft-iis-configuration/operational"),
            &[("NewValue", "X")],
            &[NEW],
        ),
        fx(
            "sysmon's own event 29",
            Kind::Raw(29, SYSMON),
            &[("Image", W3WP), ("TargetFilename", r"C:\inetpub\temp\a.exe")],
            &[],
        ),
        fx("other iis event", Kind::Raw(50, IIS), &[("NewValue", "Custom")], &[]),
        fx(
            "event 29 of another iis channel",
            Kind::Raw(29, "Microsoft-IIS-Configuration/Administrative"),
            &[("NewValue", "X")],
            &[],
        ),
        // microsoft_iis_service_account_password_dumped
        proc(
            "list apppool password",
            APPCMD,
            &s32("cmd.exe"),
            r#""C:\Windows\System32\inetsrv\appcmd.exe"  list apppool "DefaultAppPool" /text:processmodel.password"#,
            &[DUMP],
        ),
        proc(
            "quoted /text argument",
            APPCMD,
            W3WP,
            r#"appcmd list apppool "SharePoint - 80" "/text:processModel.password""#,
            &[DUMP],
        ),
        proc("quote insertion", APPCMD, W3WP, r#"appcmd l"is"t vdir "/te"xt:password"#, &[DUMP]),
        proc("upper case arguments", APPCMD, W3WP, "APPCMD LIST VDIR /TEXT:password", &[DUMP]),
        proc(
            "error text argument",
            APPCMD,
            &s32(r"WindowsPowerShell\v1.0\powershell.exe"),
            r#"appcmd.exe list apppool "ERROR ( message:Configuration error " /text:processmodel.username"#,
            &[DUMP],
        ),
        proc("list without /text", APPCMD, &s32("cmd.exe"), "appcmd list apppool /config:text", &[]),
        proc(
            "/text without list",
            APPCMD,
            &s32("cmd.exe"),
            r#"appcmd search config "Default Web Site" /text:path"#,
            &[],
        ),
        proc("list inside a quoted argument", APPCMD, &s32("cmd.exe"), r#"appcmd "list apppool" /text:name"#, &[]),
        proc("not appcmd", &s32("cmd.exe"), r"C:\Windows\explorer.exe", "cmd /c echo list /text:x", &[]),
        Fixture {
            name: "renamed appcmd (OriginalFileName)",
            kind: Kind::Process,
            fields: vec![
                ("Image", r"C:\Users\Public\ac.exe".into()),
                ("OriginalFileName", "AppCmd.exe".into()),
                ("ParentImage", s32("cmd.exe")),
                ("CommandLine", "ac.exe list apppool /text:*".into()),
            ],
            expect: &[DUMP],
            expect_4688: Some(&[]),
        },
        // windows_msiexec_spawn_discovery_command
        proc(
            "msiexec powershell",
            &s32(r"WindowsPowerShell\v1.0\powershell.exe"),
            &s32("msiexec.exe"),
            "powershell -ep bypass",
            &[MSI],
        ),
        proc(
            "msiexec cmd (SysWOW64)",
            &s32("cmd.exe"),
            r"C:\Windows\SysWOW64\MsiExec.exe",
            "cmd.exe /c net group",
            &[MSI],
        ),
        proc("msiexec nltest", &s32("nltest.exe"), &s32("msiexec.exe"), "nltest /dclist:corp", &[MSI]),
        proc("msiexec ipconfig", &s32("ipconfig.exe"), &s32("msiexec.exe"), "ipconfig /displaydns", &[MSI]),
        proc("msiexec systeminfo", &s32("SYSTEMINFO.EXE"), &s32("msiexec.exe"), "systeminfo /fo csv", &[MSI]),
        proc("msiexec whoami", &s32("whoami.exe"), &s32("msiexec.exe"), "whoami /groups", &[]),
        proc("msiexec msiexec", &s32("msiexec.exe"), &s32("msiexec.exe"), "MsiExec.exe -Embedding 4C1F", &[]),
        proc("custom action binary", &s32("cmd.exe"), r"C:\Windows\Installer\MSI4FFD.tmp", "cmd.exe /c whoami", &[]),
        // suspicious_web_file_written
        fx(
            "aspx in wwwroot",
            Kind::File,
            &[
                ("Image", &s32(r"WindowsPowerShell\v1.0\powershell.exe")),
                ("TargetFilename", r"C:\inetpub\wwwroot\shell.aspx"),
            ],
            &[FILE],
        ),
        fx(
            "php under /var/www",
            Kind::File,
            &[("Image", r"C:\Python312\python.exe"), ("TargetFilename", "/var/www/html/x.php")],
            &[FILE],
        ),
        fx(
            "upper case htdocs",
            Kind::File,
            &[("Image", r"C:\php\php-cgi.exe"), ("TargetFilename", r"C:\XAMPP\HTDOCS\CMD.PHP")],
            &[FILE],
        ),
        fx(
            "jsp in webapps",
            Kind::File,
            &[("Image", &s32("certutil.exe")), ("TargetFilename", r"D:\jboss\webapps\x.jsp")],
            &[FILE],
        ),
        fx(
            "public_html phtml",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\Users\svc_web\public_html\x.phtml")],
            &[FILE],
        ),
        fx(
            "srv www shtml",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", "/srv/www/htdocs/x.shtml")],
            &[FILE],
        ),
        fx(
            "nginx cfm",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", "/usr/share/nginx/html/x.cfm")],
            &[FILE],
        ),
        fx(
            "ashx asmx asp jspx",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\inetpub\custerr\x.ashx")],
            &[FILE],
        ),
        fx(
            "forward-slash windows path",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", "C:/inetpub/wwwroot/x.asp")],
            &[FILE],
        ),
        fx("written by w3wp", Kind::File, &[("Image", W3WP), ("TargetFilename", r"C:\inetpub\wwwroot\x.aspx")], &[]),
        fx(
            "written by msiexec",
            Kind::File,
            &[("Image", &s32("msiexec.exe")), ("TargetFilename", r"C:\inetpub\wwwroot\x.aspx")],
            &[],
        ),
        fx(
            "written by setup",
            Kind::File,
            &[("Image", r"D:\setup.exe"), ("TargetFilename", r"C:\inetpub\wwwroot\x.aspx")],
            &[],
        ),
        fx(
            "written by VS Code",
            Kind::File,
            &[
                ("Image", r"C:\Program Files\Microsoft VS Code\Code.exe"),
                ("TargetFilename", r"C:\inetpub\wwwroot\x.jsp"),
            ],
            &[],
        ),
        fx(
            "written by robocopy",
            Kind::File,
            &[("Image", &s32("Robocopy.exe")), ("TargetFilename", r"C:\inetpub\wwwroot\x.jsp")],
            &[],
        ),
        fx(
            "not a script",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\inetpub\wwwroot\shell.aspx.txt")],
            &[],
        ),
        fx(
            "script outside web roots",
            Kind::File,
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\Users\jsmith\source\Default.aspx")],
            &[],
        ),
        fx(
            "file event of the wrong id",
            Kind::Raw(29, SYSMON),
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\inetpub\wwwroot\x.aspx")],
            &[],
        ),
        fx(
            "file event of the wrong channel",
            Kind::Raw(11, "Security"),
            &[("Image", &s32("cmd.exe")), ("TargetFilename", r"C:\inetpub\wwwroot\x.aspx")],
            &[],
        ),
        // iis_module_registered
        fx(
            "W3SVC ServiceDll",
            Kind::Registry,
            &[
                ("Image", &s32("reg.exe")),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3SVC\Parameters\ServiceDll"),
                ("Details", r"C:\ProgramData\a1b2.dll"),
            ],
            &[REG],
        ),
        fx(
            "InetStp module",
            Kind::Registry,
            &[
                ("Image", &s32("rundll32.exe")),
                ("TargetObject", r"HKLM\SOFTWARE\Microsoft\InetStp\Modules\ProxyFilter\Image"),
                ("Details", r"%windir%\System32\inetsrv\x.DLL"),
            ],
            &[REG],
        ),
        fx(
            "WAS listener",
            Kind::Registry,
            &[
                ("Image", &s32("svchost.exe")),
                ("TargetObject", r"HKLM\SYSTEM\CURRENTCONTROLSET\SERVICES\WAS\Parameters\ListenerAdapter"),
                ("Details", r"C:\x.dll"),
            ],
            &[REG],
        ),
        fx(
            "not a dll",
            Kind::Registry,
            &[
                ("Image", &s32("svchost.exe")),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3SVC\Start"),
                ("Details", "DWORD (0x00000002)"),
            ],
            &[],
        ),
        fx(
            "dll.bak",
            Kind::Registry,
            &[
                ("Image", &s32("reg.exe")),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3SVC\Parameters\ServiceDll"),
                ("Details", r"C:\x.dll.bak"),
            ],
            &[],
        ),
        fx(
            "by TrustedInstaller",
            Kind::Registry,
            &[
                ("Image", r"C:\Windows\servicing\TrustedInstaller.exe"),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3SVC\Parameters\ServiceDll"),
                ("Details", r"C:\x.dll"),
            ],
            &[],
        ),
        fx(
            "by wusa",
            Kind::Registry,
            &[
                ("Image", &s32("WUSA.EXE")),
                ("TargetObject", r"HKLM\SOFTWARE\Microsoft\InetStp\Components\X"),
                ("Details", r"C:\x.dll"),
            ],
            &[],
        ),
        fx(
            "W3LOGSVC is not W3SVC",
            Kind::Registry,
            &[
                ("Image", &s32("svchost.exe")),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3LOGSVC\Parameters\ServiceDll"),
                ("Details", r"C:\w3logsvc.dll"),
            ],
            &[],
        ),
        fx(
            "key created (event 12)",
            Kind::Raw(12, SYSMON),
            &[
                ("Image", &s32("reg.exe")),
                ("TargetObject", r"HKLM\System\CurrentControlSet\Services\W3SVC\Parameters\ServiceDll"),
                ("Details", r"C:\x.dll"),
            ],
            &[],
        ),
        // webshell parents with children in neither list, and non-web parents
        proc("w3wp notepad", &s32("notepad.exe"), W3WP, "notepad.exe out.txt", &[]),
        proc("w3wp tasklist", &s32("tasklist.exe"), W3WP, "tasklist /v", &[]),
        proc("javaw is not java", &s32("cmd.exe"), r"C:\Oracle\jdk\bin\javaw.exe", "cmd /c whoami", &[]),
        proc("php.exe is not php-cgi", &s32("cmd.exe"), r"C:\php\php.exe", "cmd /c whoami", &[]),
        proc("iisexpress", &s32("cmd.exe"), r"C:\Program Files\IIS Express\iisexpress.exe", "cmd", &[]),
        proc(
            "under a tomcat folder, not a tomcat binary",
            &s32("cmd.exe"),
            r"C:\tomcat\bin\catalina-helper.exe",
            "cmd",
            &[],
        ),
        proc("cmd spawning net", &s32("net.exe"), &s32("cmd.exe"), "net user", &[]),
    ];
    let parents = [
        W3WP,
        r"C:\Apache24\bin\httpd.exe",
        r"C:\nginx\NGINX.EXE",
        r"C:\Program Files\Apache Software Foundation\Tomcat 9.0\bin\tomcat9.exe",
        r"C:\Tomcat\bin\Tomcat10.exe",
        "tomcat.exe",
        r"C:\Program Files\Java\jdk-17\bin\java.exe",
        r"C:\php\php-cgi.exe",
        r"C:\Strawberry\perl\bin\perl.exe",
        r"C:\Python312\python.exe",
        r"C:\Ruby32-x64\bin\ruby.exe",
        r"C:\Program Files\nodejs\node.exe",
    ];
    let shells =
        ["cmd.exe", r"WindowsPowerShell\v1.0\powershell.exe", "pwsh.exe", "wscript.exe", "cscript.exe", "MSHTA.EXE"];
    let discovery = [
        "rundll32.exe",
        "regsvr32.exe",
        "certutil.exe",
        "net.exe",
        "net1.exe",
        "whoami.exe",
        "systeminfo.exe",
        "nltest.exe",
        "curl.exe",
        "wget.exe",
        "HOSTNAME.EXE",
        "ipconfig.exe",
    ];
    for (i, parent) in parents.iter().enumerate() {
        f.push(proc("web parent, shell child", &s32(shells[i % shells.len()]), parent, "child", &[SHELL]));
        f.push(proc("web parent, discovery child", &s32(discovery[i % discovery.len()]), parent, "child", &[DISC]));
    }
    for (i, child) in shells.iter().enumerate() {
        f.push(proc("each shell child", &s32(child), parents[(i * 5) % parents.len()], "x", &[SHELL]));
    }
    for (i, child) in discovery.iter().enumerate() {
        f.push(proc("each discovery child", &s32(child), parents[(i * 7) % parents.len()], "x", &[DISC]));
    }
    f
}

#[test]
fn every_rule_in_every_shape() {
    let tagger = builtin_tagger();
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for fixture in fixtures() {
        let fields: Vec<(&str, &str)> = fixture.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for record in records(fixture.kind, &fields) {
            let want = if record.security { fixture.expect_4688.unwrap_or(fixture.expect) } else { fixture.expect };
            let input = format!("{}\n", record.line);
            let (output, _) = tagger.tag_all(input.as_bytes());
            assert_contract(input.as_bytes(), &output, "iis_tagger");
            let got = detections(&output, "iis_tagger").remove(0);
            if got != want {
                failures.push(format!(
                    "{} [{}]: want {want:?}, got {got:?}\n  {}",
                    fixture.name, record.label, record.line
                ));
            }
            seen.extend(got);
        }
    }
    assert!(failures.is_empty(), "{} fixtures failed:\n{}", failures.len(), failures.join("\n"));
    for rule in RuleSet::builtin().expect("rules").rules() {
        assert!(seen.contains(&rule.meta.slug), "no positive fixture for {}", rule.meta.slug);
    }
}

#[test]
fn fixtures_agree_with_and_without_prefilter() {
    let lines: String = fixtures()
        .iter()
        .flat_map(|f| {
            let fields: Vec<(&str, &str)> = f.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            records(f.kind, &fields).into_iter().map(|r| r.line + "\n").collect::<Vec<_>>()
        })
        .collect();
    let full = Tagger::new(RuleSet::builtin().expect("rules"), Config { prefilter: false, ..Config::default() })
        .expect("tagger");
    let (a, _) = builtin_tagger().tag_all(lines.as_bytes());
    let (b, _) = full.tag_all(lines.as_bytes());
    assert_eq!(a, b);
}

#[test]
fn annotation_is_the_design_shape_and_risk_is_the_maximum() {
    let line = records(
        Kind::Process,
        &[("Image", APPCMD), ("ParentImage", W3WP), ("CommandLine", "appcmd install module /image:x list /text:y")],
    )
    .remove(0)
    .line;
    let (out, stats) = builtin_tagger().tag_all(line.as_bytes());
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let a = &v["iis_tagger"];
    assert_eq!(a["risk_score"], 64);
    assert_eq!(a["severity"], "high");
    let d = &a["detections"];
    assert_eq!(d[0]["rule"], ADD);
    assert_eq!(d[0]["id"], "38fe731c-1f13-43d4-b878-a5bbe44807e3");
    assert_eq!(d[0]["mitre"], serde_json::json!(["T1505", "T1505.004"]));
    assert_eq!(d[0]["tactics"], serde_json::json!(["persistence"]));
    assert_eq!(d[1]["rule"], DUMP);
    assert_eq!(d[1]["source"], "Elastic");
    assert_eq!(d[1]["risk_score"], 21);
    assert_eq!(d[1]["severity"], "low");
    assert_eq!(d[1]["tactics"], serde_json::json!(["credential-access"]));
    assert_eq!(stats.matches.iter().sum::<u64>(), 2);
    assert_eq!(stats.annotated, 1);
}

/// A record that is valid in two shapes at once (the members of one shape's record added to
/// another's) is read in both: the detection of either half is found whichever half holds
/// the attack, so a second shape can add a detection, never hide one. ECS is the documented
/// exception on one side: its names are read only where the record has no Sysmon name for
/// the field (they repeat `winlog.event_data`), so an ECS attack half under a Sysmon-named
/// benign half is not expected to be read.
#[test]
fn a_record_in_two_shapes_is_read_in_both() {
    use crate::support::{Shape, event_in, every_shape};
    let attack = [("Image", s32("cmd.exe")), ("ParentImage", W3WP.to_string()), ("CommandLine", "cmd /c ver".into())];
    let benign = [
        ("Image", s32("notepad.exe")),
        ("ParentImage", r"C:\Windows\explorer.exe".to_string()),
        ("CommandLine", "notepad".into()),
    ];
    let fields = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let object = |shape: Shape, f: &[(&'static str, String)]| {
        let f = fields(f);
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let line = event_in(shape, 1, SYSMON, &refs)?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(o)) => Some(o),
            _ => None, // the XML line is one shape only
        }
    };
    let tagger = builtin_tagger();
    let (mut pairs, mut failures) = (0, Vec::new());
    for a in every_shape() {
        for b in every_shape() {
            let (Some(bad), Some(good)) = (object(a, &attack), object(b, &benign)) else { continue };
            if a == b || bad.keys().any(|k| good.keys().any(|g| g.eq_ignore_ascii_case(k))) {
                continue; // not two shapes side by side
            }
            let ecs_under_sysmon = a == Shape::Ecs && b != Shape::Ecs;
            for (first, second) in [(&bad, &good), (&good, &bad)] {
                let mut merged = first.clone();
                merged.extend(second.iter().map(|(k, v)| (k.clone(), v.clone())));
                let input = format!("{}\n", serde_json::Value::Object(merged));
                let (output, _) = tagger.tag_all(input.as_bytes());
                assert_contract(input.as_bytes(), &output, "iis_tagger");
                let got = detections(&output, "iis_tagger").remove(0);
                if !ecs_under_sysmon && !got.iter().any(|d| d == SHELL) {
                    failures.push(format!("attack in {a:?}, benign {b:?}: {got:?}\n  {input}"));
                }
                pairs += 1;
            }
        }
    }
    assert!(pairs >= 100, "{pairs} pairs tried");
    assert!(failures.is_empty(), "{} of {pairs} failed:\n{}", failures.len(), failures.join("\n"));
}

/// An event in a string member after blanks (`"\n<Event…"`) is read, but the prefilter's
/// marks of embedded events need the event to start the string: such records are counted,
/// so the gap is said, not silent.
#[test]
fn an_event_after_blanks_in_a_string_is_read_and_counted() {
    use crate::support::xml_event;
    let xml = xml_event(1, SYSMON, &[("Image", &s32("cmd.exe")), ("ParentImage", W3WP)]);
    let tagger = builtin_tagger();
    for (lead, unmarked) in [("", 0), ("\n  ", 1), (" ", 1)] {
        let line = format!("{}\n", serde_json::json!({"event": {"original": format!("{lead}{xml}")}}));
        let (out, stats) = tagger.tag_all(line.as_bytes());
        assert_contract(line.as_bytes(), &out, "iis_tagger");
        assert_eq!(detections(&out, "iis_tagger"), [vec![SHELL]], "{lead:?}");
        assert_eq!(stats.embedded_events, 1, "{lead:?}");
        assert_eq!(stats.unmarked_embedded, unmarked, "{lead:?}");
    }
}

/// XML markup hides literals from a byte scan only in an XML line, so the stream looks for
/// it line by line among the lines it passes over (not in a pass over every read): an XML
/// event whose every literal is written in character references, a comment or CDATA, amid
/// JSON lines and plain XML lines in one read, is found, and every line is counted once.
#[test]
fn xml_markup_amid_lines_passed_over_is_inspected() {
    use crate::support::xml_event;
    let benign = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\explorer.exe","ProcessGuid":"{1}"}"#;
    let plain_xml = xml_event(1, SYSMON, &[("Image", "C:\\Windows\\explorer.exe")]);
    let hidden = [
        xml_event(
            1,
            SYSMON,
            &[
                ("Image", "C:\\Windows\\System32\\XXcmd.exe"),
                ("ParentImage", "C:\\Windows\\System32\\inetsrv\\XXw3wp.exe"),
            ],
        )
        .replace("XXcmd", "&#x63;md")
        .replace("XXw3wp", "w&#51;wp"),
        xml_event(
            1,
            SYSMON,
            &[
                ("Image", "C:\\Windows\\System32\\XXcmd.exe"),
                ("ParentImage", "C:\\Windows\\System32\\inetsrv\\XXw3wp.exe"),
            ],
        )
        .replace("XXcmd", "c<!-- -->md")
        .replace("XXw3wp", "w3<![CDATA[wp]]>"),
    ];
    let tagger = builtin_tagger();
    for hidden in &hidden {
        assert!(!hidden.contains("cmd.exe") && !hidden.contains("w3wp"), "no literal in the bytes");
        let mut input = String::new();
        // Past the lines a stream parses whatever the prefilter says.
        for _ in 0..iis_tagger::SHAPE_SAMPLE_LINES + 10 {
            input.push_str(benign);
            input.push('\n');
        }
        for lines in [vec![&plain_xml, hidden, benign], vec![hidden], vec![&plain_xml, &plain_xml, hidden]] {
            for l in lines {
                input.push_str(l);
                input.push('\n');
            }
        }
        let (out, stats) = tagger.tag_all(input.as_bytes());
        assert_contract(input.as_bytes(), &out, "iis_tagger");
        let found: Vec<_> = detections(&out, "iis_tagger").into_iter().filter(|d| !d.is_empty()).collect();
        assert_eq!(found, vec![vec![SHELL]; 3], "{hidden}");
        assert_eq!(stats.lines, input.lines().count() as u64, "every line counted once");
    }
}
