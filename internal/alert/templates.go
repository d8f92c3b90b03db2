package alert

// Default texts, per language. Each set defines "<kind>.title" and
// "<kind>.text" for the known kinds, "default.title"/"default.text" for any
// other kind, and helpers ("burn", "detail", "node") that overrides may use.
var defaultTemplates = map[string]map[string]string{
	"en": {
		"burn":   `{{if not .Known}}Burn rate unknown.{{else if .Burning}}Burn rate {{.Burn}} min/h; time to zero at this rate: {{.TimeToZero}}.{{else}}Burn rate {{.Burn}} min/h: not burning.{{end}}`,
		"detail": `{{with .Detail}} {{.}}.{{end}}`,
		"node":   `{{with .Node}} on node {{.}}{{end}}`,

		"threshold.title":       `minuted: {{.Project}} below {{.Threshold}} min`,
		"threshold.text":        `Project {{.Project}}: balance {{.Balance}} min, below the threshold of {{.Threshold}} min. {{template "burn" .}}{{template "detail" .}}`,
		"exhausted.title":       `minuted: {{.Project}} balance exhausted`,
		"exhausted.text":        `Project {{.Project}} has run out: balance {{.Balance}} min{{if .HasThreshold}} (threshold {{.Threshold}} min){{end}}; calls are refused or cut by its policy. {{template "burn" .}}{{template "detail" .}}`,
		"unknown_project.title": `minuted: unknown project {{.Project}}`,
		"unknown_project.text":  `Calls named project {{.Project}}, which was not configured{{template "node" .}}; balance {{.Balance}} min. {{template "burn" .}}{{template "detail" .}}`,
		"ari_lost.title":        `minuted: ARI connection lost{{template "node" .}}`,
		"ari_lost.text":         `Asterisk ARI connection lost{{template "node" .}}: calls there are not seen until it is back.{{template "detail" .}}`,
		"ari_restored.title":    `minuted: ARI connection restored{{template "node" .}}`,
		"ari_restored.text":     `Asterisk ARI connection restored{{template "node" .}}.{{template "detail" .}}`,
		"unbilled.title":        `minuted: unbilled calls{{template "node" .}}`,
		"unbilled.text":         `{{.Count}} call(s) with no project were seen{{template "node" .}}; they are not billed.{{template "detail" .}}`,
		"dead_lettered.title":   `minuted: messages dead-lettered`,
		"dead_lettered.text":    `{{.Count}} message(s) could not be processed and were moved to the dead-letter stream{{template "node" .}}.{{template "detail" .}}`,
		"redis_down.title":      `minuted: Redis unreachable{{template "node" .}}`,
		"redis_down.text":       `The ledger (Redis) is unreachable{{template "node" .}}: billing waits until it is back.{{template "detail" .}}`,
		"default.title":         `minuted: {{.Kind}}{{with .Project}} ({{.}}){{end}}`,
		"default.text":          `Alert {{.Kind}}{{with .Project}} for project {{.}}{{end}}{{template "node" .}}.{{template "detail" .}}`,
	},
	"ru": {
		"burn":   `{{if not .Known}}Скорость расхода неизвестна.{{else if .Burning}}Расход {{.Burn}} мин/ч; до нуля при таком расходе: {{.TimeToZero}}.{{else}}Расход {{.Burn}} мин/ч: баланс не расходуется.{{end}}`,
		"detail": `{{with .Detail}} {{.}}.{{end}}`,
		"node":   `{{with .Node}} на узле {{.}}{{end}}`,

		"threshold.title":       `minuted: {{.Project}} ниже {{.Threshold}} мин`,
		"threshold.text":        `Проект {{.Project}}: баланс {{.Balance}} мин, ниже порога {{.Threshold}} мин. {{template "burn" .}}{{template "detail" .}}`,
		"exhausted.title":       `minuted: баланс {{.Project}} исчерпан`,
		"exhausted.text":        `Проект {{.Project}} исчерпал баланс: {{.Balance}} мин{{if .HasThreshold}} (порог {{.Threshold}} мин){{end}}; звонки отклоняются или обрываются по его политике. {{template "burn" .}}{{template "detail" .}}`,
		"unknown_project.title": `minuted: неизвестный проект {{.Project}}`,
		"unknown_project.text":  `Звонки указали проект {{.Project}}, которого не было в настройках{{template "node" .}}; баланс {{.Balance}} мин. {{template "burn" .}}{{template "detail" .}}`,
		"ari_lost.title":        `minuted: потеряно соединение с ARI{{template "node" .}}`,
		"ari_lost.text":         `Потеряно соединение с Asterisk ARI{{template "node" .}}: звонки там не видны, пока оно не восстановится.{{template "detail" .}}`,
		"ari_restored.title":    `minuted: соединение с ARI восстановлено{{template "node" .}}`,
		"ari_restored.text":     `Соединение с Asterisk ARI восстановлено{{template "node" .}}.{{template "detail" .}}`,
		"unbilled.title":        `minuted: звонки без проекта{{template "node" .}}`,
		"unbilled.text":         `Замечено звонков без проекта: {{.Count}}{{template "node" .}}; они не тарифицируются.{{template "detail" .}}`,
		"dead_lettered.title":   `minuted: сообщения в очереди ошибок`,
		"dead_lettered.text":    `Не удалось обработать сообщений: {{.Count}}{{template "node" .}}; они перемещены в поток недоставленных.{{template "detail" .}}`,
		"redis_down.title":      `minuted: Redis недоступен{{template "node" .}}`,
		"redis_down.text":       `Реестр (Redis) недоступен{{template "node" .}}: тарификация ждёт его восстановления.{{template "detail" .}}`,
		"default.title":         `minuted: {{.Kind}}{{with .Project}} ({{.}}){{end}}`,
		"default.text":          `Оповещение {{.Kind}}{{with .Project}} по проекту {{.}}{{end}}{{template "node" .}}.{{template "detail" .}}`,
	},
}
