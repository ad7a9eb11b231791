"""`review`: a static HTML page of a job's masks over its images, lowest scores first: which
images it shows (`selection`), how it reads them (`pictures`), and the page itself (`page`,
`review_page.html`)."""
