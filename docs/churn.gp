$ours_none << EOD
1 452.8 471
2 756.0 1462
4 798.9 4748
8 878.6 8434
16 961.5 16427
32 878.7 19969
EOD
$ours_uid << EOD
1 364.6 1310
2 758.5 967
4 744.1 4190
8 704.1 9985
16 808.0 16050
32 877.5 27752
EOD
$ours_pid << EOD
1 357.5 1704
2 575.3 1785
4 683.8 4909
8 778.5 7520
16 769.0 22416
32 789.5 40330
EOD
$lttng_none << EOD
1 171.7 NaN
2 230.8 NaN
4 247.7 NaN
8 300.9 NaN
16 315.4 NaN
32 316.1 NaN
EOD
$lttng_uid << EOD
1 118.3 NaN
2 173.2 NaN
4 191.8 NaN
8 201.6 NaN
16 188.1 NaN
32 178.7 NaN
EOD
$lttng_pid << EOD
1 5.9 NaN
2 6.1 NaN
4 5.6 NaN
8 6.2 NaN
16 6.4 NaN
32 5.6 NaN
EOD
set terminal pngcairo size 1200,520 noenhanced
set output 'docs/churn.png'
set multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'
set logscale x 2
set xlabel 'PAR (apps launched at once)'
set key below
set grid
set ylabel 'apps/s'
set logscale y 10
plot $ours_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)', $lttng_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 2 pt 6 title 'lttng none (200 apps)', $lttng_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 2 pt 6 title 'lttng uid (200 apps)', $lttng_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 2 pt 6 title 'lttng pid (40 apps)'
set ylabel 'p99 registration latency, app-measured (us)'
plot $ours_none using 1:3 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:3 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:3 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)'
unset multiplot
