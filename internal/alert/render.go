package alert

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Languages Render speaks; "" means English.
var Languages = []string{"en", "ru"}

// View is the data a template sees. Numbers are already formatted for the
// language (two decimals for balances and rates, a comma in Russian).
type View struct {
	ID, Kind, Project, Node, Detail string
	Count                           int
	At                              string // RFC 3339, UTC
	Balance                         string // minutes, 2 decimals
	HasThreshold                    bool
	Threshold                       string // minutes
	Known, Burning                  bool
	Burn                            string // minutes per hour, 2 decimals
	TimeToZero                      string // "about 3 h 20 min"; "not burning" at zero rate
}

// Templates are the parsed text templates of every language.
type Templates struct {
	sets map[string]*template.Template
}

// NewTemplates parses the default templates with overrides applied.
// An override key is "[<lang>.]<kind>.title" or "[<lang>.]<kind>.text"
// (kind may be "default", the template of kinds without their own); a key
// without a language applies to every language. Each override is executed
// against a sample alert at load, so a bad field name fails here, with the
// key named in the error.
func NewTemplates(overrides map[string]string) (*Templates, error) {
	t := &Templates{sets: make(map[string]*template.Template, len(Languages))}
	for _, lang := range Languages {
		set := template.New(lang).Option("missingkey=error")
		for _, name := range sortedKeys(defaultTemplates[lang]) {
			template.Must(set.New(name).Parse(defaultTemplates[lang][name]))
		}
		t.sets[lang] = set
	}
	var errs []error
	for _, key := range sortedKeys(overrides) {
		langs, name, err := splitKey(key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, lang := range langs {
			if _, err := t.sets[lang].New(name).Parse(overrides[key]); err != nil {
				errs = append(errs, fmt.Errorf("templates.%s: %w", key, err))
				break
			}
			if err := t.sets[lang].ExecuteTemplate(discard{}, name, sampleView()); err != nil {
				errs = append(errs, fmt.Errorf("templates.%s: %w", key, err))
				break
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func splitKey(key string) (langs []string, name string, err error) {
	parts := strings.Split(key, ".")
	if len(parts) == 3 {
		if !validLang(parts[0]) {
			return nil, "", fmt.Errorf("templates.%s: language %q is not one of %v", key, parts[0], Languages)
		}
		langs, parts = []string{parts[0]}, parts[1:]
	} else {
		langs = Languages
	}
	if len(parts) != 2 || (parts[1] != "title" && parts[1] != "text") || !kindRE.MatchString(parts[0]) {
		return nil, "", fmt.Errorf("templates.%s: key must be [<lang>.]<kind>.title or [<lang>.]<kind>.text, e.g. ru.threshold.text", key)
	}
	return langs, parts[0] + "." + parts[1], nil
}

func validLang(l string) bool {
	for _, x := range Languages {
		if x == l {
			return true
		}
	}
	return false
}

// CheckLanguage returns an error naming the supported languages.
func CheckLanguage(lang string) error {
	if lang != "" && !validLang(lang) {
		return fmt.Errorf("language %q is not supported: use one of %v", lang, Languages)
	}
	return nil
}

// Render returns the title and text of a in lang ("en" or "ru"; "" means
// "en"). tmpl nil means the default templates.
func Render(a Alert, c Context, lang string, tmpl *Templates) (title, text string, err error) {
	if lang == "" {
		lang = "en"
	}
	if err := CheckLanguage(lang); err != nil {
		return "", "", err
	}
	if tmpl == nil {
		if tmpl, err = NewTemplates(nil); err != nil {
			return "", "", err
		}
	}
	set := tmpl.sets[lang]
	v := newView(a, c, lang)
	kind := a.Kind
	if set.Lookup(kind+".title") == nil || set.Lookup(kind+".text") == nil {
		kind = "default"
	}
	var b strings.Builder
	if err := set.ExecuteTemplate(&b, kind+".title", v); err != nil {
		return "", "", fmt.Errorf("render %s title: %w", kind, err)
	}
	title = b.String()
	b.Reset()
	if err := set.ExecuteTemplate(&b, kind+".text", v); err != nil {
		return "", "", fmt.Errorf("render %s text: %w", kind, err)
	}
	return title, b.String(), nil
}

func newView(a Alert, c Context, lang string) View {
	v := View{
		ID: a.ID, Kind: a.Kind, Project: a.Project, Node: a.Node, Detail: a.Detail, Count: a.Count,
		At:      a.At.UTC().Format(time.RFC3339),
		Balance: number(float64(a.BalanceSeconds)/60, 2, lang),
		Known:   c.Known, Burning: c.Known && c.Burning,
		Burn: number(c.BurnMinutesPerHour, 2, lang),
	}
	if a.ThresholdMinutes != nil {
		v.HasThreshold, v.Threshold = true, number(*a.ThresholdMinutes, -1, lang)
	}
	switch {
	case !c.Known:
		v.TimeToZero = words[lang].unknown
	case !v.Burning:
		v.TimeToZero = words[lang].notBurning
	case a.BalanceSeconds <= 0:
		v.TimeToZero = words[lang].spent
	default:
		v.TimeToZero = HumanDuration(c.TimeToZero, lang)
	}
	return v
}

// number formats f with prec decimals (-1: as few as needed), with a
// decimal comma in Russian.
func number(f float64, prec int, lang string) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	s := strconv.FormatFloat(f, 'f', prec, 64)
	if s == "-0.00" || s == "-0" {
		s = s[1:]
	}
	if lang == "ru" {
		s = strings.Replace(s, ".", ",", 1)
	}
	return s
}

type vocabulary struct {
	about, lessThanMinute, moreThanYear, d, h, min, notBurning, spent, unknown string
}

var words = map[string]vocabulary{
	"en": {about: "about", lessThanMinute: "less than a minute", moreThanYear: "more than a year",
		d: "d", h: "h", min: "min", notBurning: "not burning", spent: "0 min, the balance is already used up", unknown: "unknown"},
	"ru": {about: "около", lessThanMinute: "меньше минуты", moreThanYear: "больше года",
		d: "дн", h: "ч", min: "мин", notBurning: "не расходуется", spent: "0 мин, баланс уже израсходован", unknown: "неизвестно"},
}

// HumanDuration says d in words, rounded to the minute, with its two largest
// units: "about 3 h 20 min", "about 2 d 4 h", "less than a minute".
func HumanDuration(d time.Duration, lang string) string {
	w, ok := words[lang]
	if !ok {
		w = words["en"]
	}
	switch {
	case d < 30*time.Second:
		return w.lessThanMinute
	case d > 365*24*time.Hour:
		return w.moreThanYear
	}
	m := int64(d.Round(time.Minute) / time.Minute)
	days, hours, mins := m/(24*60), m/60%24, m%60
	var parts []string
	add := func(n int64, unit string) {
		if n > 0 {
			parts = append(parts, strconv.FormatInt(n, 10)+" "+unit)
		}
	}
	if days > 0 {
		add(days, w.d)
		add(hours, w.h)
	} else {
		add(hours, w.h)
		add(mins, w.min)
	}
	return w.about + " " + strings.Join(parts, " ")
}

func sampleView() View {
	t := 10.0
	return newView(Alert{Schema: Schema, ID: "sample", Kind: Threshold, Project: "sample", Node: "node1",
		At: time.Unix(0, 0), BalanceSeconds: 600, ThresholdMinutes: &t, Detail: "detail", Count: 1},
		Context{Known: true, BurnMinutesPerHour: 6, TimeToZero: 100 * time.Minute, Burning: true}, "en")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
