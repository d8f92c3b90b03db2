package alert

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var at = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func f64(f float64) *float64 { return &f }

func burning(balance int64, rate float64) Context {
	d, ok := TimeToZero(balance, rate)
	return Context{Known: true, BurnMinutesPerHour: rate, TimeToZero: d, Burning: ok}
}

func TestRenderProjectKinds(t *testing.T) {
	thr := Alert{Schema: Schema, ID: "a1", Kind: Threshold, Project: "acme", At: at, BalanceSeconds: 599, ThresholdMinutes: f64(10)}
	exh := Alert{Schema: Schema, ID: "a2", Kind: Exhausted, Project: "acme", At: at, BalanceSeconds: -90, ThresholdMinutes: f64(0), Detail: "call cut"}
	unk := Alert{Schema: Schema, ID: "a3", Kind: UnknownProject, Project: "newco", Node: "pbx1", At: at}
	cases := []struct {
		name        string
		a           Alert
		c           Context
		lang        string
		title, text string
	}{
		{"threshold en", thr, burning(599, 3), "en",
			"minuted: acme below 10 min",
			"Project acme: balance 9.98 min, below the threshold of 10 min. Burn rate 3.00 min/h; time to zero at this rate: about 3 h 20 min."},
		{"threshold ru", thr, burning(599, 3), "ru",
			"minuted: acme ниже 10 мин",
			"Проект acme: баланс 9,98 мин, ниже порога 10 мин. Расход 3,00 мин/ч; до нуля при таком расходе: около 3 ч 20 мин."},
		{"threshold zero rate en", thr, burning(599, 0), "en",
			"minuted: acme below 10 min",
			"Project acme: balance 9.98 min, below the threshold of 10 min. Burn rate 0.00 min/h: not burning."},
		{"threshold zero rate ru", thr, burning(599, 0), "ru",
			"minuted: acme ниже 10 мин",
			"Проект acme: баланс 9,98 мин, ниже порога 10 мин. Расход 0,00 мин/ч: баланс не расходуется."},
		{"threshold unknown rate en", thr, Context{}, "en",
			"minuted: acme below 10 min",
			"Project acme: balance 9.98 min, below the threshold of 10 min. Burn rate unknown."},
		{"threshold unknown rate ru", thr, Context{}, "ru",
			"minuted: acme ниже 10 мин",
			"Проект acme: баланс 9,98 мин, ниже порога 10 мин. Скорость расхода неизвестна."},
		{"exhausted negative balance en", exh, burning(-90, 12.5), "en",
			"minuted: acme balance exhausted",
			"Project acme has run out: balance -1.50 min (threshold 0 min); calls are refused or cut by its policy. Burn rate 12.50 min/h; time to zero at this rate: 0 min, the balance is already used up. call cut."},
		{"exhausted negative balance ru", exh, burning(-90, 12.5), "ru",
			"minuted: баланс acme исчерпан",
			"Проект acme исчерпал баланс: -1,50 мин (порог 0 мин); звонки отклоняются или обрываются по его политике. Расход 12,50 мин/ч; до нуля при таком расходе: 0 мин, баланс уже израсходован. call cut."},
		{"unknown project en", unk, burning(0, 0), "en",
			"minuted: unknown project newco",
			"Calls named project newco, which was not configured on node pbx1; balance 0.00 min. Burn rate 0.00 min/h: not burning."},
		{"unknown project ru", unk, burning(0, 0), "ru",
			"minuted: неизвестный проект newco",
			"Звонки указали проект newco, которого не было в настройках на узле pbx1; баланс 0,00 мин. Расход 0,00 мин/ч: баланс не расходуется."},
	}
	t1, x1, _ := Render(thr, Context{}, "", nil)
	t2, x2, _ := Render(thr, Context{}, "en", nil)
	if t1 != t2 || x1 != x2 {
		t.Fatalf("default language is not English: %q %q", t1, x1)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			title, text, err := Render(c.a, c.c, c.lang, nil)
			if err != nil {
				t.Fatal(err)
			}
			if title != c.title || text != c.text {
				t.Fatalf("got\n  %q\n  %q\nwant\n  %q\n  %q", title, text, c.title, c.text)
			}
		})
	}
}

func TestRenderSystemKinds(t *testing.T) {
	base := Alert{Schema: Schema, ID: "s", Node: "pbx7", At: at, Count: 4, Detail: "after 30s"}
	cases := []struct {
		kind             string
		enWant, ruWant   []string // substrings of title+text
		enTitle, ruTitle string
	}{
		{ARILost, []string{"ARI connection lost on node pbx7", "after 30s."}, []string{"потеряно соединение с ARI на узле pbx7"}, "minuted: ARI connection lost on node pbx7", "minuted: потеряно соединение с ARI на узле pbx7"},
		{ARIRestored, []string{"restored on node pbx7."}, []string{"восстановлено на узле pbx7."}, "minuted: ARI connection restored on node pbx7", "minuted: соединение с ARI восстановлено на узле pbx7"},
		{Unbilled, []string{"4 call(s) with no project", "not billed"}, []string{"Замечено звонков без проекта: 4", "не тарифицируются"}, "minuted: unbilled calls on node pbx7", "minuted: звонки без проекта на узле pbx7"},
		{DeadLettered, []string{"4 message(s) could not be processed", "dead-letter"}, []string{"Не удалось обработать сообщений: 4"}, "minuted: messages dead-lettered", "minuted: сообщения в очереди ошибок"},
		{RedisDown, []string{"Redis", "unreachable on node pbx7"}, []string{"Redis", "недоступен на узле pbx7"}, "minuted: Redis unreachable on node pbx7", "minuted: Redis недоступен на узле pbx7"},
		{"future_kind", []string{"Alert future_kind on node pbx7. after 30s."}, []string{"Оповещение future_kind на узле pbx7. after 30s."}, "minuted: future_kind", "minuted: future_kind"},
	}
	for _, c := range cases {
		for _, lang := range Languages {
			a := base
			a.Kind = c.kind
			title, text, err := Render(a, Context{}, lang, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", c.kind, lang, err)
			}
			want, wantTitle := c.enWant, c.enTitle
			if lang == "ru" {
				want, wantTitle = c.ruWant, c.ruTitle
			}
			if title != wantTitle {
				t.Errorf("%s %s title = %q, want %q", c.kind, lang, title, wantTitle)
			}
			for _, w := range want {
				if !strings.Contains(title+"\n"+text, w) {
					t.Errorf("%s %s: %q\n%q\nlacks %q", c.kind, lang, title, text, w)
				}
			}
			if strings.Contains(text, "<no value>") || strings.Contains(text, "Burn") {
				t.Errorf("%s %s: unexpected text %q", c.kind, lang, text)
			}
		}
	}
}

func TestTemplatesOverride(t *testing.T) {
	tmpl, err := NewTemplates(map[string]string{
		"threshold.title":    `LOW {{.Project}}`,
		"ru.threshold.text":  `{{.Project}}: {{.Balance}} мин / {{.Threshold}}. {{template "burn" .}}`,
		"default.text":       `other: {{.Kind}}`,
		"ru.ari_lost.title":  `ARI!`,
		"exhausted.text":     `{{.Project}} {{.TimeToZero}}`,
		"en.redis_down.text": `R {{.Node}}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := Alert{Schema: Schema, ID: "x", Kind: Threshold, Project: "acme", At: at, BalanceSeconds: 1800, ThresholdMinutes: f64(60)}
	title, text, err := Render(a, burning(1800, 60), "ru", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if title != "LOW acme" || text != "acme: 30,00 мин / 60. Расход 60,00 мин/ч; до нуля при таком расходе: около 30 мин." {
		t.Fatalf("ru: %q / %q", title, text)
	}
	// English text keeps the default; the title override applies to all languages.
	title, text, _ = Render(a, burning(1800, 60), "en", tmpl)
	if title != "LOW acme" || !strings.HasPrefix(text, "Project acme: balance 30.00 min") {
		t.Fatalf("en: %q / %q", title, text)
	}
	a.Kind = "something_new"
	if _, text, _ = Render(a, Context{}, "en", tmpl); text != "other: something_new" {
		t.Fatalf("default override: %q", text)
	}
	a.Kind = RedisDown
	a.Node = "n1"
	if _, text, _ = Render(a, Context{}, "en", tmpl); text != "R n1" {
		t.Fatalf("en.redis_down.text: %q", text)
	}
	if _, text, _ = Render(a, Context{}, "ru", tmpl); !strings.HasPrefix(text, "Реестр (Redis)") {
		t.Fatalf("ru redis_down should keep default: %q", text)
	}
}

func TestTemplatesErrorsNameKey(t *testing.T) {
	cases := map[string]string{
		"threshold.text":      `{{.NoSuchField}}`,
		"de.threshold.text":   `x`,
		"threshold.body":      `x`,
		"ru.threshold.title":  `{{.Project`,
		"Threshold.text":      `x`,
		"a.b.c.d":             `x`,
		"threshold.text.more": `x`,
	}
	for key, body := range cases {
		_, err := NewTemplates(map[string]string{key: body})
		if err == nil || !strings.Contains(err.Error(), "templates."+key) {
			t.Errorf("%s: err = %v, want one naming the key", key, err)
		}
	}
	if _, _, err := Render(Alert{Kind: Threshold}, Context{}, "de", nil); err == nil {
		t.Error("language de accepted")
	}
}

func TestDecode(t *testing.T) {
	good := Alert{Schema: Schema, ID: "thr/acme/10/1", Kind: Threshold, Project: "acme", At: at, BalanceSeconds: 540, ThresholdMinutes: f64(10)}
	b, _ := json.Marshal(good)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != good.ID || got.Project != "acme" || *got.ThresholdMinutes != 10 || !got.At.Equal(at) {
		t.Fatalf("round trip: %+v", got)
	}
	bad := []string{
		`{`,
		`{"schema":2,"id":"x","kind":"threshold","project":"p","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"","kind":"ari_lost","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"a b","kind":"ari_lost","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"x","kind":"threshold","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"x","kind":"threshold","project":"a.b","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"x","kind":"Bad Kind","at":"2025-01-01T00:00:00Z"}`,
		`{"schema":1,"id":"x","kind":"ari_lost"}`,
		`{"schema":1,"id":"x","kind":"ari_lost","at":"2025-01-01T00:00:00Z","count":-1}`,
	}
	for _, s := range bad {
		if _, err := Decode([]byte(s)); err == nil {
			t.Errorf("accepted %s", s)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"schema":1,"id":"thr/acme/10/1","kind":"threshold","project":"acme","at":"2025-01-01T00:00:00Z","balance_seconds":-60,"threshold_minutes":10}`))
	f.Add([]byte(`{"schema":1,"id":"x","kind":"ari_lost","node":"n1","at":"2025-01-01T00:00:00Z","count":3,"detail":"d"}`))
	f.Add([]byte(`{"schema":1,"id":"x","kind":"x","at":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Decode(b)
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Decode returned an invalid alert: %v", err)
		}
		// Whatever decodes renders in every language without error.
		for _, lang := range Languages {
			if _, _, err := Render(a, Measure(a, nil, 0), lang, nil); err != nil {
				t.Fatalf("render %s: %v", lang, err)
			}
		}
		re, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(re); err != nil {
			t.Fatalf("re-encoded alert does not decode: %v", err)
		}
	})
}
